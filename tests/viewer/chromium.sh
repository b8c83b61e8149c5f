#!/usr/bin/env bash
# Debian's chromium for the viewer's browser tests (tests/viewer): Playwright drives it with
# executable_path=/usr/bin/chromium (`playwright install` downloads browsers and cannot run here).
#   tests/viewer/chromium.sh    install it with apt-get if missing; print its path
# Needs root and apt-get the first time (as tests/slurm/cluster.sh does for SLURM).
set -u
CHROMIUM=/usr/bin/chromium
die() { echo "chromium.sh: $*" >&2; exit 1; }
if [ ! -x "$CHROMIUM" ]; then
    command -v apt-get >/dev/null || die "chromium is not installed and there is no apt-get to install it"
    [ "$(id -u)" = 0 ] || die "chromium is not installed and installing it needs root (apt-get install chromium)"
    log=$(mktemp "${TMPDIR:-/tmp}/slidegrad-chromium-apt.XXXXXX")
    export DEBIAN_FRONTEND=noninteractive
    if ! apt-get install -y -qq --no-install-recommends chromium >"$log" 2>&1; then
        apt-get update -qq >>"$log" 2>&1 || true
        apt-get install -y -qq --no-install-recommends chromium >>"$log" 2>&1 \
            || die "apt-get install chromium failed (see $log)"
    fi
fi
[ -x "$CHROMIUM" ] || die "$CHROMIUM missing after the install"
echo "$CHROMIUM"
