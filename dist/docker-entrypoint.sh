#!/bin/sh
# Container entry point: seeds a demo ledger when TXP_SEED_ACCOUNTS > 0 and
# none exists yet, then becomes txprocd (exec: the master must be PID 1 so
# that it receives SIGTERM and drains). Arguments are passed to txprocd.
set -eu
: "${TXP_DB_PATH:=/var/lib/txprocd/users.db}"
if [ "${TXP_SEED_ACCOUNTS:-0}" -gt 0 ]; then
    case "$TXP_DB_PATH" in
    postgres://* | postgresql://* | *=*)
        # A PostgreSQL ledger (URI or conninfo) is shared, and may already
        # hold accounts: txctl seed refuses a ledger that has any, which is
        # the normal case after the first start (or when another node
        # seeded it first). An unreachable server is reported by txprocd.
        txctl seed --db "$TXP_DB_PATH" --accounts "$TXP_SEED_ACCOUNTS" ||
            echo "docker-entrypoint: ledger not seeded (see above); starting on it as it is" >&2
        ;;
    *)
        if [ ! -s "$TXP_DB_PATH" ]; then
            txctl seed --db "$TXP_DB_PATH" --accounts "$TXP_SEED_ACCOUNTS"
        fi
        ;;
    esac
fi
exec txprocd "$@"
