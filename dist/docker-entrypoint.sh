#!/bin/sh
# Container entry point: seeds a demo ledger when TXP_SEED_ACCOUNTS > 0 and
# none exists yet, then becomes txprocd (exec: the master must be PID 1 so
# that it receives SIGTERM and drains). Arguments are passed to txprocd.
set -eu
: "${TXP_DB_PATH:=/var/lib/txprocd/users.db}"
if [ "${TXP_SEED_ACCOUNTS:-0}" -gt 0 ] && [ ! -s "$TXP_DB_PATH" ]; then
    txctl seed --db "$TXP_DB_PATH" --accounts "$TXP_SEED_ACCOUNTS"
fi
exec txprocd "$@"
