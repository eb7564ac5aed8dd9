#!/bin/sh
# Installs the Debian packages the benchmarks need (never `make test`): wrk
# drives the load, nginx is the HTTP ceiling, gnuplot draws the scaling
# charts. linux-perf is optional (profiling by hand, see the README).
# Runs apt-get only when something is absent. The nginx instance the bench
# uses is its own (tools/bench/nginx.conf, loopback, ephemeral port); the
# distribution's nginx service is not needed and is not touched.
set -eu

PACKAGES="wrk nginx-light gnuplot-nox sqlite3 libsqlite3-dev"

installed() {
    dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed"
}

missing=""
for p in $PACKAGES; do
    case "$p" in
    # Any nginx flavour will do: it only has to serve `return 202`.
    nginx-light) command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || missing="$missing $p" ;;
    *) installed "$p" || missing="$missing $p" ;;
    esac
done
[ -z "$missing" ] && exit 0

echo "bench deps: installing missing Debian packages:$missing" >&2
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1; then SUDO="sudo"; else
        echo "bench deps: need root (or sudo) to install:$missing" >&2; exit 1
    fi
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
# shellcheck disable=SC2086
$SUDO apt-get install -y -qq --no-install-recommends $missing >/dev/null
