"""Regenerate the settings table of docs/configuration.md from consumer/settings.py.

uv run python scripts/gen_config_doc.py          # rewrite the table
uv run python scripts/gen_config_doc.py --check  # exit 1 if the doc is stale
"""

from __future__ import annotations

import sys
from pathlib import Path

from consumer.settings import describe

DOC = Path(__file__).resolve().parents[1] / "docs" / "configuration.md"
BEGIN = "<!-- settings-table:begin -->"
END = "<!-- settings-table:end -->"


def table() -> str:
    rows = ["| Variable | Default | Meaning |", "|---|---|---|"]
    rows += [
        f"| `{name}` | {f'`{default}`' if default else '(empty)'} | {text} |"
        for name, default, text in describe()
    ]
    return "\n".join(rows)


def render(current: str) -> str:
    head, rest = current.split(BEGIN, 1)
    _old, tail = rest.split(END, 1)
    return f"{head}{BEGIN}\n{table()}\n{END}{tail}"


def main() -> int:
    current = DOC.read_text()
    wanted = render(current)
    if "--check" in sys.argv:
        if wanted != current:
            print("docs/configuration.md is stale: run scripts/gen_config_doc.py", file=sys.stderr)
            return 1
        return 0
    DOC.write_text(wanted)
    return 0


if __name__ == "__main__":
    sys.exit(main())
