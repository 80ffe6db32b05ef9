#!/usr/bin/env bash
# System packages some tests need, installed only when missing (idempotent, quiet).
# Run by scripts/test.sh before pytest. Append a block per need.
set -euo pipefail

need_apt=()
# systemd-analyze: tests/integration/test_systemd_unit.py verifies systemd/amo1c-sync.service
command -v systemd-analyze >/dev/null 2>&1 || need_apt+=(systemd)
# headless browser test: tests/browser/test_widget_card.py
[ -x /usr/bin/chromium ] || need_apt+=(chromium)
[ -x /usr/bin/chromedriver ] || need_apt+=(chromium-driver)
[ -f /usr/share/javascript/jquery/jquery.min.js ] || need_apt+=(libjs-jquery)
[ -d /usr/share/fonts/truetype/dejavu ] || need_apt+=(fonts-dejavu-core)

if [ "${#need_apt[@]}" -gt 0 ]; then
    SUDO=""
    if [ "$(id -u)" -ne 0 ]; then SUDO="sudo -n"; fi
    export DEBIAN_FRONTEND=noninteractive
    $SUDO apt-get update -qq >/dev/null
    $SUDO apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
fi
