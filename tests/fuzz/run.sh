#!/bin/sh
# Runs one libFuzzer binary for a bounded time on a scratch copy of its seed
# corpus, so the checked-in corpus never grows; a crashing input is kept in
# the artifact directory. The fuzzer's own output goes to ARTIFACT_DIR/
# <name>.log: a success prints its statistics, a failure the report.
# Exits non-zero on any finding.
#
#   run.sh BINARY CORPUS_DIR SECONDS MAX_LEN ARTIFACT_DIR
set -eu
bin=$1 corpus=$2 seconds=$3 max_len=$4 artifacts=$5
name=$(basename "$bin")

work=$(mktemp -d "${TMPDIR:-/tmp}/txp-fuzz.XXXXXX")
trap 'rm -rf "$work"' EXIT
trap 'exit 130' INT TERM
cp "$corpus"/* "$work"/
mkdir -p "$artifacts"
log="$artifacts/$name.log"

echo "fuzz: $name for ${seconds}s on $(ls "$work" | wc -l) seed inputs (log: $log)"
# The fuzzer stops itself after -max_total_time; the outer timeout only
# bounds a fuzzer that hangs outside an input (each input has -timeout).
if timeout --signal=KILL $((seconds + 120)) "$bin" \
    -max_total_time="$seconds" -max_len="$max_len" -timeout=10 -rss_limit_mb=2048 \
    -print_final_stats=1 -artifact_prefix="$artifacts/$name-" "$work" >"$log" 2>&1; then
    grep -E '^(Done|stat::(number_of_executed_units|average_exec_per_sec|new_units_added|peak_rss_mb))' \
        "$log" | sed "s/^/fuzz: $name: /"
else
    status=$?
    tail -n 60 "$log" >&2
    echo "fuzz: $name FAILED (exit $status); reproduce with: $bin <input above>" >&2
    exit 1
fi
