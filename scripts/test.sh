#!/usr/bin/env bash
# Set up everything the tests need, then run the whole suite (unit, integration, e2e)
# against the real Docker engine. Extra arguments go to pytest.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

"$root/scripts/setup.sh"

echo "proctor: ruff and mypy" >&2
.venv/bin/ruff check .
.venv/bin/mypy

echo "proctor: running the test suite" >&2
exec .venv/bin/pytest "$@"
