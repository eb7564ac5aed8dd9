#!/bin/sh
# The Debian packages the benchmarks need besides the build's own (never
# `make test`): wrk drives the load, nginx is the HTTP ceiling, gnuplot draws
# the scaling charts. Any nginx flavour will do (it only serves `return 202`
# from tools/bench/nginx.conf on loopback; the distribution's nginx service
# is not needed and is not touched).
set -eu
extra="wrk gnuplot-nox"
command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || extra="$extra nginx-light"
# shellcheck disable=SC2086
exec sh "$(dirname "$0")/../deps.sh" $extra
