#!/usr/bin/env bash
# Set up everything the tests need (Docker engine, base images, PostgreSQL, .venv), lint,
# then run the whole suite on SQLite, and every test that uses a database again on
# PostgreSQL (the unit tests use none).
# Extra arguments go to both pytest runs.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

"$root/scripts/setup.sh"
"$root/scripts/install-browser.sh"
postgres_url="$("$root/scripts/install-postgres.sh")"

echo "proctor: ruff and mypy" >&2
.venv/bin/ruff check .
.venv/bin/mypy

echo "proctor: test suite on SQLite" >&2
.venv/bin/pytest "$@"

echo "proctor: integration and end-to-end tests on PostgreSQL" >&2
PROCTOR_TEST_POSTGRES_URL="$postgres_url" \
    .venv/bin/pytest tests/integration tests/e2e --database postgresql "$@"
