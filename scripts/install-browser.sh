#!/usr/bin/env bash
# Make sure headless Chromium and its WebDriver are installed for the dashboard's browser
# test: install Debian's chromium and chromium-driver only when either is missing.
set -euo pipefail

say() { echo "proctor: $*" >&2; }
browser=/usr/bin/chromium
driver=/usr/bin/chromedriver

if [ -x "$browser" ] && [ -x "$driver" ]; then
    exit 0
fi
say "installing Chromium and its WebDriver (Debian packages chromium, chromium-driver)"
apt-get update -q >/dev/null
DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
    chromium chromium-driver >/dev/null
say "browser ready: $("$browser" --version 2>/dev/null || echo chromium)"
