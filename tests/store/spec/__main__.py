"""``python -m tests.store.spec [--uri URI] [--service-only]``: run the CRUD specification
files against a server and print the table (files, tests run, passed, failed, skipped by
reason; then each failure). Exit 0 when no test of an operation the service uses failed,
1 otherwise, 2 on bad usage."""

from __future__ import annotations

import argparse
import collections
import os
import sys

from tests.store.spec.runner import FileRun, Outcome, Server
from tests.store.spec.source import PYMONGO_VERSION, crud_unified_files


def run_all(uri: str) -> list[Outcome]:
    server = Server(uri)
    outcomes: list[Outcome] = []
    for path in crud_unified_files():
        outcomes.extend(FileRun(server, path).run())
    return outcomes


def table(outcomes: list[Outcome]) -> str:
    def row(label: str, group: list[Outcome]) -> str:
        count = collections.Counter(o.status for o in group)
        run = count["passed"] + count["failed"]
        files = len({o.file for o in group})
        cells = [label, files, len(group), run, count["passed"], count["failed"], count["skipped"]]
        return "| " + " | ".join(str(c) for c in cells) + " |"

    lines = [
        f"CRUD unified-format specification tests (PyMongo {PYMONGO_VERSION} sdist)",
        "",
        "| tests | files | total | run | passed | failed | skipped |",
        "|---|---|---|---|---|---|---|",
        row("all", outcomes),
        row("of operations the service uses", [o for o in outcomes if o.service]),
        "",
        "| skipped because | tests |",
        "|---|---|",
    ]
    reasons = collections.Counter(o.reason for o in outcomes if o.status == "skipped")
    lines += [f"| {reason} | {n} |" for reason, n in reasons.most_common()]
    failed = [o for o in outcomes if o.status == "failed"]
    if failed:
        lines += ["", "failed:"]
        lines += [
            f"- {'[service] ' if o.service else ''}{o.file}: {o.test}: {o.reason[:300]}"
            for o in failed
        ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.store.spec", description=__doc__)
    parser.add_argument("--uri", default=os.environ.get("PASS_STATUS_MONGODB_URI"))
    args = parser.parse_args(argv)
    if not args.uri:
        sys.stderr.write("tests.store.spec: no server: pass --uri or set PASS_STATUS_MONGODB_URI\n")
        return 2
    outcomes = run_all(args.uri)
    print(table(outcomes))  # noqa: T201
    return 1 if any(o.status == "failed" and o.service for o in outcomes) else 0


if __name__ == "__main__":
    sys.exit(main())
