#!/usr/bin/env bash
# Set up proctor on this machine, start the server and a worker on the embedded default
# (SQLite under ./.proctor), install the example dataset, submit the example model that
# trains on it and print its score.
# proctor keeps running afterwards; the script says how to stop it.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

say() { echo "proctor: $*" >&2; }
ready() {
    .venv/bin/python - "$1/readyz" <<'PY' 2>/dev/null
import sys, httpx
sys.exit(0 if httpx.get(sys.argv[1], timeout=2).status_code == 200 else 1)
PY
}

"$root/scripts/setup.sh"

export PROCTOR_HOME="${PROCTOR_HOME:-$root/.proctor}"
port="${PROCTOR_PORT:-8000}"
url="http://127.0.0.1:$port"
mkdir -p "$PROCTOR_HOME"

if ready "$url"; then
    say "proctor already answers at $url"
else
    say "starting proctor (server and worker) at $url; log in $PROCTOR_HOME/up.log"
    setsid nohup .venv/bin/proctor up --port "$port" >"$PROCTOR_HOME/up.log" 2>&1 &
    echo $! >"$PROCTOR_HOME/up.pid"
    for _ in $(seq 1 120); do
        ready "$url" && break
        if ! kill -0 "$(cat "$PROCTOR_HOME/up.pid")" 2>/dev/null; then
            say "proctor up exited; its log:"
            tail -n 30 "$PROCTOR_HOME/up.log" >&2
            exit 1
        fi
        sleep 0.5
    done
    ready "$url" || { say "proctor did not become ready; see $PROCTOR_HOME/up.log"; exit 1; }
fi

datasets_dir="${PROCTOR_DATASETS_DIR:-$PROCTOR_HOME/datasets}"
if [ ! -d "$datasets_dir/breast-cancer" ]; then
    say "installing the example dataset in $datasets_dir/breast-cancer"
    mkdir -p "$datasets_dir"
    cp -r examples/datasets/breast-cancer "$datasets_dir/"
fi

if [ $# -eq 0 ]; then
    set -- examples/breast-cancer-model --dataset breast-cancer
fi
say "submitting $*"
.venv/bin/proctor submit "$@" --name quickstart --wait

cat >&2 <<MSG
proctor: proctor is running at $url (API docs: $url/docs).
proctor: try: .venv/bin/proctor list    .venv/bin/proctor leaderboard --dataset breast-cancer
proctor:      .venv/bin/proctor submit examples/busybox --wait
proctor: stop it with: kill \$(cat $PROCTOR_HOME/up.pid)
MSG
