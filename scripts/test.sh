#!/usr/bin/env bash
# Install deepsift with its test extras and the real services the tests drive (Debian's
# PostgreSQL, Chromium and libturbojpeg, when missing and run as root), then run the whole test suite inside a
# loopback-only network namespace: no test can reach the network (Ray's helpers try to). The tests
# start their own throwaway PostgreSQL server (tests/pgserver.py) and Chromium inside it.
# Extra arguments go to pytest, e.g. `bash scripts/test.sh -k parity`.
set -euo pipefail
cd "$(dirname "$0")/.."
python -m pip install --quiet --disable-pip-version-check torch==2.13.0 -e '.[test]'
export RAY_USAGE_STATS_ENABLED=0 RAY_AUTH_MODE=disabled HF_HUB_OFFLINE=1 HF_HUB_DISABLE_TELEMETRY=1
missing=()
command -v ip >/dev/null || missing+=(iproute2)
[ -x /usr/bin/chromium ] || missing+=(chromium)
ls -d /usr/lib/postgresql/*/bin >/dev/null 2>&1 || missing+=(postgresql)
ldconfig -p 2>/dev/null | grep -q libturbojpeg || missing+=(libturbojpeg0)   # exact JPEG region decoding
if [ ${#missing[@]} -gt 0 ] && [ "$(id -u)" = 0 ]; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
if [ "$(id -u)" = 0 ]; then ns=(unshare -n); else ns=(unshare -rn); fi   # -r: as a user, map to root
exec "${ns[@]}" sh -c 'ip link set lo up 2>/dev/null || true; exec python -m pytest "$@"' pytest "$@"
