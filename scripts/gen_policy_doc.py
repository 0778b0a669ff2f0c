"""Regenerate the failure-policy tables of docs/reliability.md from consumer/policy.py.

uv run python scripts/gen_policy_doc.py          # rewrite the tables
uv run python scripts/gen_policy_doc.py --check  # exit 1 if the doc is stale
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

from consumer.policy import render_markdown

DOC = Path(__file__).resolve().parents[1] / "docs" / "reliability.md"
SECTION = re.compile(r"(<!-- policy:begin -->\n).*?(<!-- policy:end -->)", re.DOTALL)


def main(argv: list[str]) -> int:
    text = DOC.read_text()
    fresh = SECTION.sub(lambda m: m.group(1) + render_markdown() + m.group(2), text)
    if "--check" in argv:
        return 0 if fresh == text else 1
    DOC.write_text(fresh)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
