#!/bin/sh
# Installs the Debian packages txprocd needs to build and test, if any are
# missing, plus any package names given as arguments (CI adds the tools its
# extra tests drive: promtool, chromium, tmux). Runs apt-get only when
# something is absent, so it is cheap to call from every `make run`/`make test`.
set -eu

PACKAGES="gcc make libc6-dev pkg-config libevent-dev libcjson-dev libsqlite3-dev sqlite3 libpq-dev libhttp-parser-dev \
python3 python3-pytest python3-requests python3-yaml curl valgrind strace $*"

missing=""
for p in $PACKAGES; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
        missing="$missing $p"
    fi
done
[ -z "$missing" ] && exit 0

echo "deps: installing missing Debian packages:$missing" >&2
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1; then SUDO="sudo"; else
        echo "deps: need root (or sudo) to install:$missing" >&2; exit 1
    fi
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
# shellcheck disable=SC2086
$SUDO apt-get install -y -qq --no-install-recommends $missing >/dev/null
