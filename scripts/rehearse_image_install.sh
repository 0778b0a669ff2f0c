#!/usr/bin/env bash
# Rehearses the Dockerfile's install steps without a container engine: the same commands, in
# the same order, in a clean temporary directory and virtual environment, then runs the entry
# point (`python -m consumer ... --help`) from outside the source tree, as the image does.
# tests/unit/test_chart.py checks that every `uv sync` of the Dockerfile appears here verbatim.
#
#   scripts/rehearse_image_install.sh        (CI: .ci/run)
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

step() { printf '\n==> %s\n' "$*"; }
die() { printf 'rehearse_image_install: %s\n' "$*" >&2; exit 1; }

# The builder stage's environment (UV_PYTHON: the image has /usr/local/bin/python3.11; here
# any CPython 3.11 uv finds, never a download).
export UV_COMPILE_BYTECODE=1 UV_LINK_MODE=copy UV_PYTHON_DOWNLOADS=never
export UV_PYTHON="${REHEARSE_PYTHON:-3.11}" UV_PROJECT_ENVIRONMENT="$tmp/app/.venv"
venv_python="$UV_PROJECT_ENVIRONMENT/bin/python"
mkdir -p "$tmp/src"
cd "$tmp/src"

step "dependency layer: only uv.lock and pyproject.toml (bind mounts), no project"
cp "$root/uv.lock" "$root/pyproject.toml" .
uv sync --locked --no-dev --no-editable --no-install-project
rm uv.lock pyproject.toml # a bind mount is gone after its RUN: the layer cannot depend on them
"$venv_python" -c "import aiokafka, pymongo, orjson, prometheus_client, fastjsonschema"
if "$venv_python" -c "import consumer" 2>/dev/null; then
    die "the dependency layer installed the project"
fi

step "project layer: COPY pyproject.toml uv.lock README.md, consumer/, schemas/"
cp "$root/pyproject.toml" "$root/uv.lock" "$root/README.md" .
mkdir consumer schemas
(cd "$root/consumer" && tar --exclude=__pycache__ --exclude='*.py[cod]' -cf - .) | tar -xf - -C consumer
cp "$root"/schemas/*.json schemas/
REVISION=rehearsal-0000000
sed -i "s|^REVISION = .*|REVISION = \"${REVISION}\"|" consumer/build.py
uv sync --locked --no-dev --no-editable \
    && "$venv_python" -m consumer --help >/dev/null

step "the installed package runs from outside the source tree"
cd /
rm -rf "$tmp/src" # the final stage has no source tree
for args in "--help" "run --help" "tick --help" "check --help" "dead-letters --help"; do
    # shellcheck disable=SC2086 # word splitting wanted
    "$venv_python" -m consumer $args >/dev/null || die "python -m consumer $args failed"
done
"$venv_python" - "$REVISION" <<'PY'
import sys
from pathlib import Path

import consumer
from consumer import build, schemas

assert "site-packages" in consumer.__file__, consumer.__file__
assert build.REVISION == sys.argv[1], build.REVISION
assert (Path(consumer.__file__).parent / "_schemas" / "ticket-used.v1.json").is_file()
assert schemas.validator(schemas.TICKET_USED)
try:
    import pytest  # noqa: F401
except ImportError:
    pass
else:
    raise SystemExit("a dev dependency (pytest) was installed")
print("installed:", consumer.__file__, "revision", build.REVISION)
PY
step "image install rehearsal passed"
