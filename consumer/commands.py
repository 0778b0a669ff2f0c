"""The online subcommands: ``run``, ``tick``, ``check --user ID | --all`` and
``dead-letters list|replay``.

Each turns parsed arguments into a call of the composition root and an exit code:
0 done, 1 a runtime failure (infrastructure unreachable, or a replay that refused cut dead
letters), 2 bad configuration.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys

import orjson

from consumer import app, logs, replay
from consumer.errors import ConfigError, PassStatusError
from consumer.policy import Action, Path, decide
from consumer.settings import Settings, unknown_variables

log = logs.get_logger(__name__)


def load_settings() -> Settings:
    """The process's settings; the one place the environment is read."""
    return Settings.from_env(os.environ)


EXIT_SIGTERM = 143  # 128 + SIGTERM, as a shell reports a process ended by it


def _fail(code: int, message: str) -> int:
    print(f"pass-status: error: {message}", file=sys.stderr)  # noqa: T201 - CLI contract
    return code


def _failed(exc: PassStatusError) -> int:
    """A one-shot command's failure: exit 2 where the policy refuses (configuration, a
    missing topic), else 1; one line on stderr either way."""
    refused = decide(exc, Path.COMMAND).action is Action.REFUSE_TO_START
    return _fail(2 if refused else 1, str(exc))


def _settings_or_exit() -> Settings | int:
    try:
        settings = load_settings()
    except ConfigError as exc:
        return _fail(2, str(exc))
    logs.configure(settings.log_level, settings.secrets())
    unknown = unknown_variables(os.environ)
    if unknown:  # names only: a misspelt variable may hold a secret
        log.warning("unknown_settings_ignored", variables=unknown)
    return settings


def run_command(_args: argparse.Namespace) -> int:
    settings = _settings_or_exit()
    if isinstance(settings, int):
        return settings
    try:
        return asyncio.run(app.run_service(settings))
    except PassStatusError as exc:
        if decide(exc, Path.START).action is Action.REFUSE_TO_START:
            return _fail(2, str(exc))
        raise


def tick_command(args: argparse.Namespace) -> int:
    settings = _settings_or_exit()
    if isinstance(settings, int):
        return settings
    try:
        events = asyncio.run(
            app.publish_ticks(settings, args.mode, args.user, apply=not args.dry_run)
        )
    except PassStatusError as exc:
        return _failed(exc)
    except asyncio.CancelledError:
        return _fail(EXIT_SIGTERM, "tick: stopped by SIGTERM; no tick was acknowledged")
    for event in events:
        sys.stdout.write(orjson.dumps(event).decode() + "\n")
    return 0


def online_check_command(args: argparse.Namespace) -> int:
    settings = _settings_or_exit()
    if isinstance(settings, int):
        return settings

    def emit(document: dict[str, object]) -> None:
        sys.stdout.write(orjson.dumps(document).decode() + "\n")

    try:
        asyncio.run(app.run_full_check(settings, args.user, apply=args.apply, emit=emit))
    except PassStatusError as exc:
        return _failed(exc)
    return 0


def dead_letters_command(args: argparse.Namespace) -> int:
    settings = _settings_or_exit()
    if isinstance(settings, int):
        return settings
    selection = replay.Selection(
        reasons=frozenset(args.reason or ()),
        source_topics=frozenset(args.source_topic or ()),
        since=args.since,
        until=args.until,
        source_partition=args.partition,
        min_offset=args.from_offset,
        max_offset=args.to_offset,
        limit=args.limit,
    )

    def emit(line: dict[str, object]) -> None:
        sys.stdout.write(orjson.dumps(line).decode() + "\n")
        sys.stdout.flush()  # each line as its batch is done: a long replay shows progress

    try:
        outcome = asyncio.run(
            app.dead_letters(
                settings,
                selection,
                replay=args.action == "replay",
                dry_run=bool(getattr(args, "dry_run", False)),
                emit=emit,
            )
        )
    except PassStatusError as exc:  # a refused replay says how many were replayed
        return _failed(exc)
    if outcome.refused:
        return _fail(
            1,
            f"dead-letters replay: {outcome.refused} cut dead letter(s) not replayed: they do"
            ' not hold the whole record (lines with "action": "refused")',
        )
    return 0
