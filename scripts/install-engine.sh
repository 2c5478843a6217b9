#!/usr/bin/env bash
# Make sure a Docker engine answers: install Debian's docker.io if dockerd is missing,
# start dockerd in the background if none runs, and wait until it is ready.
set -euo pipefail

say() { echo "proctor: $*" >&2; }
log=/var/log/proctor-dockerd.log
ready_seconds=60

engine_up() { docker info >/dev/null 2>&1; }

if command -v docker >/dev/null 2>&1 && engine_up; then
    exit 0
fi
if [ -n "${DOCKER_HOST:-}" ]; then
    say "DOCKER_HOST=$DOCKER_HOST does not answer; start that engine, or unset DOCKER_HOST"
    exit 1
fi
if ! command -v dockerd >/dev/null 2>&1 || ! command -v docker >/dev/null 2>&1; then
    say "installing the Docker engine (Debian package docker.io)"
    apt-get update -q >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q docker.io >/dev/null
fi
if ! engine_up; then
    say "starting dockerd (log: $log)"
    setsid nohup dockerd >"$log" 2>&1 </dev/null &
    for _ in $(seq 1 $((ready_seconds * 2))); do
        engine_up && break
        sleep 0.5
    done
fi
if ! engine_up; then
    say "the Docker engine did not start within ${ready_seconds} s; see $log"
    tail -n 20 "$log" >&2 || true
    exit 1
fi
say "Docker engine ready: $(docker version --format '{{.Server.Version}}')"
