#!/usr/bin/env bash
# Debian's chromium for the Playwright browser test (never `playwright install`: no downloads
# at test time). Does nothing when /usr/bin/chromium is already there.
set -euo pipefail
command -v chromium >/dev/null 2>&1 && exit 0
sudo=""
[ "$(id -u)" = 0 ] || sudo="sudo -n"
echo "test: installing Debian's chromium for the browser test" >&2
$sudo apt-get update -qq >/dev/null
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends chromium >/dev/null
