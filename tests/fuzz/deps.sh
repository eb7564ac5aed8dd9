#!/bin/sh
# Installs the Debian packages the fuzzers need (never `make test`): clang
# with its sanitizer and libFuzzer runtimes, and the cJSON headers the
# validator is built against. Runs apt-get only when something is absent.
set -eu

PACKAGES="clang libclang-rt-14-dev libcjson-dev make"

missing=""
for p in $PACKAGES; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
        missing="$missing $p"
    fi
done
[ -z "$missing" ] && exit 0

echo "fuzz deps: installing missing Debian packages:$missing" >&2
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1; then SUDO="sudo"; else
        echo "fuzz deps: need root (or sudo) to install:$missing" >&2; exit 1
    fi
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
# shellcheck disable=SC2086
$SUDO apt-get install -y -qq --no-install-recommends $missing >/dev/null
