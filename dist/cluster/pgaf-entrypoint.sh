#!/bin/sh
# Entry point of the pg_auto_failover image (Dockerfile.pgaf): creates the
# node on first start, then runs pg_autoctl in the foreground (exec: it gets
# SIGTERM and stops PostgreSQL cleanly).
#   PGAF_ROLE=monitor                       the monitor
#   PGAF_ROLE=postgres PGAF_MONITOR=URI     a data node (the first to join is
#                                           the primary, the next a standby)
#   PGAF_NAME, PGAF_HOSTNAME                its name and how others reach it
# Authentication: trust on the compose network only (PGAF_AUTH to change it,
# e.g. scram-sha-256 with a ~/.pgpass); never publish these ports.
set -eu
: "${PGAF_HOSTNAME:=$(hostname)}"
: "${PGAF_AUTH:=trust}"
if [ ! -f "$PGDATA/PG_VERSION" ]; then
    case "${PGAF_ROLE:?PGAF_ROLE must be monitor or postgres}" in
    monitor)
        pg_autoctl create monitor --pgdata "$PGDATA" --pgport 5432 --hostname "$PGAF_HOSTNAME" \
            --auth "$PGAF_AUTH" --no-ssl
        ;;
    postgres)
        pg_autoctl create postgres --pgdata "$PGDATA" --pgport 5432 --hostname "$PGAF_HOSTNAME" \
            --name "${PGAF_NAME:-$PGAF_HOSTNAME}" --auth "$PGAF_AUTH" --no-ssl \
            --monitor "${PGAF_MONITOR:?PGAF_MONITOR must name the monitor}" --dbname ledger
        # Clients (the txprocd nodes, the init job) on the compose network.
        echo "host all all samenet $PGAF_AUTH" >>"$PGDATA/pg_hba.conf"
        ;;
    *)
        echo "pgaf-entrypoint: PGAF_ROLE '$PGAF_ROLE' is not monitor or postgres" >&2
        exit 2
        ;;
    esac
fi
exec pg_autoctl run --pgdata "$PGDATA"
