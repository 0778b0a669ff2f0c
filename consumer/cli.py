"""The command line: ``python -m consumer run | tick | check | dead-letters`` (DESIGN §6).

One function per subcommand. The online commands live in :mod:`consumer.commands` and are
imported only when used, so that the offline ``check --input`` starts without loading the
Kafka and MongoDB clients.

Exit codes: 0 done; 1 a runtime failure reported by an online command; 2 bad arguments or
unusable input, with exactly one line ``pass-status: error: ...`` on stderr and nothing
written.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from consumer.domain.times import parse_instant
from consumer.errors import ConfigError, FileInputError, InputError, UnreadableTimeError

if TYPE_CHECKING:
    from collections.abc import Sequence

PROG = "pass-status"
EXIT_USAGE = 2


class _Parser(argparse.ArgumentParser):
    """An argument parser whose errors are one-line :class:`ConfigError` s, not exits."""

    def error(self, message: str) -> NoReturn:
        command = self.prog.removeprefix(PROG).strip()  # "check" for the check subparser
        raise ConfigError(f"{command}: {message}" if command else message)


def _int_at_least(minimum: int, wording: str) -> Callable[[str], int]:
    """An argparse type: an integer of at least ``minimum``, else ``wording`` in the error."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"{wording}: {text!r}")
        return value

    return parse


_positive_int = _int_at_least(1, "must be a positive integer")
_non_negative_int = _int_at_least(0, "must not be negative")


def _instant(text: str) -> datetime:
    try:
        return parse_instant(text)
    except UnreadableTimeError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _reason_codes() -> list[str]:
    found, todo = {InputError.reason}, list(InputError.__subclasses__())
    while todo:
        cls = todo.pop()
        found.add(cls.reason)
        todo.extend(cls.__subclasses__())
    return sorted(found)


def _add_dead_letter_commands(commands: Any) -> None:
    dead = commands.add_parser(
        "dead-letters",
        help="list or replay dead letters (docs/operations.md, Dead-letter replay)",
        description="Read the dead-letter topic (PASS_STATUS_TOPIC_DEAD_LETTER) from the "
        "start; list the dead letters matching every filter given, or replay them to their "
        "source topic.",
    )
    actions = dead.add_subparsers(dest="action", required=True, metavar="ACTION")
    for name, text in (
        ("list", "print the matching dead letters, one JSON line each"),
        ("replay", "re-publish the matching dead letters to their source topic"),
    ):
        sub = actions.add_parser(name, help=text, description=text)
        sub.add_argument("--reason", action="append", choices=_reason_codes(), metavar="CODE")
        sub.add_argument("--source-topic", action="append", metavar="TOPIC")
        sub.add_argument("--since", type=_instant, metavar="ISO", help="failed at or after")
        sub.add_argument("--until", type=_instant, metavar="ISO", help="failed before")
        sub.add_argument("--partition", type=_non_negative_int, metavar="N", help="source")
        sub.add_argument("--from-offset", type=_non_negative_int, metavar="N", help="source")
        sub.add_argument("--to-offset", type=_non_negative_int, metavar="N", help="inclusive")
        sub.add_argument("--limit", type=_positive_int, metavar="N", help="first N only")
        if name == "replay":
            sub.add_argument("--dry-run", action="store_true", help="publish nothing")
        sub.set_defaults(handler=dead_letters_command)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog=PROG, description="Keeps cached Bytemark pass statuses true.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = commands.add_parser("run", help="run the consumer (settings from PASS_STATUS_*)")
    run.set_defaults(handler=run_command)

    tick = commands.add_parser("tick", help="publish tick events (what the CronJobs run)")
    tick.add_argument("--mode", choices=("due", "full"), default="due")
    tick.add_argument("--user", type=_positive_int, metavar="ID", help="one user (full mode)")
    tick.add_argument("--dry-run", action="store_true", help="full mode: do not save changes")
    tick.set_defaults(handler=tick_command)

    check = commands.add_parser(
        "check",
        help="the old status check: offline over a file (--input) or against MongoDB",
        description="With --input: check an exported file (docs/offline-check.md). "
        "Without: check users in MongoDB (--user ID or --all).",
    )
    check.add_argument("--input", type=Path, metavar="FILE", help="JSON array or NDJSON file")
    check.add_argument("--now", type=_instant, metavar="ISO", help="instant to check at")
    who = check.add_mutually_exclusive_group()
    who.add_argument("--user", type=_positive_int, metavar="ID", help="check only this user")
    who.add_argument("--all", action="store_true", help="check all users (the default offline)")
    check.add_argument("--apply", action="store_true", help="save the changes (else dry run)")
    check.add_argument("--output", type=Path, metavar="FILE", help="with --input --apply")
    check.set_defaults(handler=check_command)
    _add_dead_letter_commands(commands)
    return parser


def run_command(args: argparse.Namespace) -> int:
    from consumer import commands  # noqa: PLC0415 - loads Kafka and MongoDB clients

    return commands.run_command(args)


def tick_command(args: argparse.Namespace) -> int:
    from consumer import commands  # noqa: PLC0415 - loads Kafka and MongoDB clients

    return commands.tick_command(args)


def dead_letters_command(args: argparse.Namespace) -> int:
    command = f"dead-letters {args.action}"
    if args.since and args.until and args.since >= args.until:
        raise ConfigError(f"{command}: --since must be before --until")
    offsets = (args.from_offset, args.to_offset)
    if None not in offsets and offsets[0] > offsets[1]:
        raise ConfigError(f"{command}: --from-offset must not exceed --to-offset")
    from consumer import commands  # noqa: PLC0415 - loads Kafka and MongoDB clients

    return commands.dead_letters_command(args)


def check_command(args: argparse.Namespace) -> int:
    if args.input is None:
        return _online_check(args)
    return _offline_check(args)


def _online_check(args: argparse.Namespace) -> int:
    if args.output is not None:
        raise ConfigError("check: --output needs --input FILE")
    if args.now is not None:
        raise ConfigError("check: --now needs --input FILE")
    if args.user is None and not args.all:
        raise ConfigError("check: give --input FILE, --user ID or --all")
    from consumer import commands  # noqa: PLC0415 - loads Kafka and MongoDB clients

    return commands.online_check_command(args)


def _offline_check(args: argparse.Namespace) -> int:
    from consumer.offline.check import (  # noqa: PLC0415
        CheckLogOutputError,
        OfflineCheck,
        run_offline_check,
    )

    if args.apply and args.output is None:
        raise ConfigError("check: --apply with --input needs --output FILE")
    if args.output is not None and not args.apply:
        raise ConfigError("check: --output needs --apply (without it the check is a dry run)")
    if args.output is not None and not args.output.parent.is_dir():
        raise ConfigError(f"check: --output directory does not exist: {args.output.parent}")
    check = OfflineCheck(
        input_path=args.input,
        now=args.now if args.now is not None else datetime.now(UTC),
        user_id=args.user,
        output_path=args.output,
    )
    try:
        run_offline_check(check, sys.stdout.buffer)
    except CheckLogOutputError:
        # Standard output is unusable: point it at /dev/null so that the interpreter's
        # final flush cannot add a second message to the one line on stderr.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
        raise
    except OSError as exc:  # writing failed (the output file, if any, was removed)
        target = exc.filename or args.output or "a temporary file"
        raise FileInputError(f"cannot write {target}: {exc.strerror or exc}") from None
    return 0


def _fail(message: str) -> int:
    one_line = " ".join(message.splitlines())
    sys.stderr.write(f"{PROG}: error: {one_line}\n")
    return EXIT_USAGE


def main(argv: Sequence[str] | None = None) -> int:
    """Parse ``argv`` (default: ``sys.argv[1:]``), run the subcommand, return its exit code."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        return int(args.handler(args))
    except (ConfigError, FileInputError) as exc:
        return _fail(str(exc))
