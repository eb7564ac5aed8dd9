#!/bin/sh
# The Debian packages the fuzzers need besides the build's own (never
# `make test`): clang with its sanitizer and libFuzzer runtimes.
set -eu
exec sh "$(dirname "$0")/../../tools/deps.sh" clang libclang-rt-14-dev
