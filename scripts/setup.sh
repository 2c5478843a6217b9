#!/usr/bin/env bash
# Everything proctor needs on a fresh Debian machine: a Docker engine, the local base
# images and a virtualenv with proctor installed. Idempotent; fast when already done.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

say() { echo "proctor: $*" >&2; }

"$root/scripts/install-engine.sh"
"$root/scripts/base-images.sh"

python="${PYTHON:-python3}"
if ! "$python" -c 'import sys; assert sys.version_info >= (3, 11)' 2>/dev/null; then
    say "Python 3.11 or newer is needed (found: $("$python" --version 2>&1 || echo none))"
    exit 1
fi
if [ ! -x .venv/bin/python ]; then
    say "creating the virtualenv in .venv"
    if ! "$python" -m venv .venv 2>/dev/null; then
        say "installing python3-venv"
        apt-get update -q >/dev/null
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q python3-venv >/dev/null
        "$python" -m venv .venv
    fi
fi
stamp=.venv/.proctor-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
    say "installing proctor and its test tools into .venv"
    .venv/bin/python -m pip install -q --upgrade pip >/dev/null
    .venv/bin/python -m pip install -q -e '.[dev]'
    touch "$stamp"
fi
say "setup done"
