#!/bin/sh
# A throwaway local PostgreSQL cluster for the tests and `make run-pg`: the
# PostgreSQL ledger needs a server, and neither a test run nor a developer
# should depend on a system-wide installation, touch /var/run/postgresql, or
# leave a server behind. Everything a cluster has (data, unix socket, log,
# password) lives in one directory, and `destroy` removes it.
#
#   pgtmp.sh start DIR [--port N] [--auth trust|scram] [--setting name=value]...
#   pgtmp.sh stop DIR               fast shutdown, then immediate, then SIGKILL
#   pgtmp.sh restart DIR [--mode fast|immediate]
#   pgtmp.sh status DIR             exit 0 running, 3 stopped, 4 no cluster
#   pgtmp.sh destroy DIR            stop, then rm -rf DIR
#   pgtmp.sh psql DIR [psql args]   psql as txp on the ledger database
#
# start creates the cluster on first use (initdb into DIR/data: UTF8, locale
# C, a superuser "postgres", a LOGIN CREATEDB role "txp" and a database
# "ledger" it owns) and otherwise starts the one already there. The server
# listens on 127.0.0.1 only (port N, or a free one) and on a unix socket in
# DIR; DIR is mode 0700, so the socket's "trust" reaches only its owner (and
# root). TCP logins use --auth: trust (the default, for tests) or
# scram-sha-256 with a random password for txp kept in DIR/pgpass. start
# writes DIR/env for `.` (PGTMP_PORT, PGTMP_URI, PGPASSFILE with scram, ...)
# and prints the URI, never the password, as its last line. PostgreSQL will
# not run as root: as root the server runs as the user "postgres" (runuser),
# which then owns DIR; env and pgpass stay the caller's.
#
# Server binaries: $PGTMP_BINDIR, else `pg_config --bindir` if it is 15, else
# /usr/lib/postgresql/15/bin, else the highest /usr/lib/postgresql/*/bin.
# $PGTMP_TIMEOUT bounds a start or a stop (seconds, default 60).
# shellcheck disable=SC2016 # sh -c '... "$1"' expands in the inner shell
set -eu

TIMEOUT=${PGTMP_TIMEOUT:-60}
OSUSER=postgres         # who runs the server when we are root
# The caller's libpq settings must not redirect the commands below.
unset PGHOST PGHOSTADDR PGPORT PGUSER PGDATABASE PGPASSWORD PGSERVICE \
      PGSERVICEFILE PGOPTIONS PGDATA PGSSLMODE PGTARGETSESSIONATTRS 2>/dev/null || true

die() { printf 'pgtmp: %s\n' "$*" >&2; exit 1; }
note() { printf 'pgtmp: %s\n' "$*" >&2; }
usage() { echo "usage:" >&2; sed -n '8,13s/^#   /  /p' "$0" >&2; exit 2; }

find_bindir() {
    if [ -n "${PGTMP_BINDIR:-}" ]; then
        BINDIR=$PGTMP_BINDIR
    else
        BINDIR=""
        d=$(pg_config --bindir 2>/dev/null || true)
        if [ -n "$d" ] && [ -x "$d/postgres" ] &&
           "$d/postgres" --version 2>/dev/null | grep -q ' 15\.'; then
            BINDIR=$d
        elif [ -x /usr/lib/postgresql/15/bin/postgres ]; then
            BINDIR=/usr/lib/postgresql/15/bin
        else
            for d in $(printf '%s\n' /usr/lib/postgresql/*/bin | sort -t/ -k4,4n); do
                [ -x "$d/postgres" ] && BINDIR=$d
            done
        fi
    fi
    for b in initdb pg_ctl pg_isready postgres psql; do
        [ -x "$BINDIR/$b" ] || die "no PostgreSQL server binaries (looked for $b in" \
            "${BINDIR:-pg_config --bindir, /usr/lib/postgresql/*/bin});" \
            "install postgresql (Debian: apt-get install postgresql) or set PGTMP_BINDIR"
    done
}

# Runs a server-side command as the server's owner, from / (the caller's
# working directory may be closed to that user).
as_owner() {
    if [ "$(id -u)" -eq 0 ]; then
        (cd / && runuser -u "$OSUSER" -- "$@")
    else
        (cd / && "$@")
    fi
}

# The value of KEY in DIR/env, read rather than sourced: as root, DIR belongs
# to another user.
env_get() {
    [ -f "$DIR/env" ] || return 0
    sed -n "s/^$1='\\{0,1\\}\\([^']*\\)'\\{0,1\\}\$/\\1/p" "$DIR/env" | tail -n 1
}

# Sets DIR (absolute, created when $1 is "create") and DATA, LOG.
set_dir() {
    [ -n "$2" ] || usage
    case $2 in *"'"*|*'"'*|*\\*|*'
'*) die "DIR must not contain quotes, backslashes or newlines: $2" ;; esac
    if [ "$1" = create ]; then mkdir -p -- "$2"; fi
    if [ -d "$2" ]; then DIR=$(cd -- "$2" && pwd -P); else DIR=$2; fi
    DATA=$DIR/data
    LOG=$DIR/postgres.log
}

is_running() { [ -f "$DATA/PG_VERSION" ] && as_owner "$BINDIR/pg_ctl" status -D "$DATA" >/dev/null 2>&1; }

# psql as the superuser over the unix socket; SQL on stdin.
admin_sql() {
    timeout "$TIMEOUT" "$BINDIR/psql" -X -q -v ON_ERROR_STOP=1 -h "$DIR" -p "$1" \
        -U postgres -d postgres
}

free_port() {
    for py in /usr/bin/python3 python3; do
        if command -v "$py" >/dev/null 2>&1; then
            "$py" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])' &&
                return 0
        fi
    done
    # No python: a random port below the ephemeral range; start retries on a collision.
    n=$(od -An -tu2 -N2 /dev/urandom | tr -d ' ')
    echo $((20000 + n % 12000))
}

initdb_cluster() {
    auth=$1
    chmod 0700 "$DIR"
    if [ "$(id -u)" -eq 0 ]; then
        id -u "$OSUSER" >/dev/null 2>&1 || die "running as root needs a user \"$OSUSER\" to run the server"
        chown "$OSUSER:" "$DIR"
        runuser -u "$OSUSER" -- test -w "$DIR" -a -x "$DIR" ||
            die "$OSUSER cannot reach $DIR (a parent directory closed to other users?); pick another DIR"
    fi
    if ! as_owner "$BINDIR/initdb" -D "$DATA" -U postgres -E UTF8 --locale=C \
            --auth-local=trust --auth-host=reject >"$DIR/initdb.log" 2>&1; then
        tail -n 20 "$DIR/initdb.log" >&2
        die "initdb failed (whole output in $DIR/initdb.log)"
    fi
    case $auth in trust) method=trust ;; *) method=scram-sha-256 ;; esac
    # Replaces initdb's file: no replication entries, no ::1 (we do not listen there).
    as_owner sh -c 'cat > "$1"' sh "$DATA/pg_hba.conf" <<EOF
# Written by pgtmp.sh. The socket is in a 0700 directory: trust reaches only its owner.
# TYPE  DATABASE  USER  ADDRESS       METHOD
local   all       all                 trust
host    all       all   127.0.0.1/32  $method
EOF
    as_owner sh -c 'cat >> "$1"' sh "$DATA/postgresql.conf" <<EOF

# --- pgtmp.sh: a throwaway test cluster (later lines win) ---
listen_addresses = '127.0.0.1'
unix_socket_directories = '$DIR'
max_connections = 200
shared_buffers = 128MB
fsync = on
logging_collector = off
log_line_prefix = '%m [%p] %q%u@%d/%a '
EOF
}

# Appends "name = value" lines to postgresql.conf (PostgreSQL keeps the last).
append_conf() {
    [ $# -gt 0 ] || return 0
    for kv in "$@"; do printf '%s\n' "$kv"; done |
        as_owner sh -c 'cat >> "$1"' sh "$DATA/postgresql.conf"
}

# Waits up to TIMEOUT seconds for a started postmaster to accept connections.
wait_ready() {
    i=0
    while [ $i -lt "$TIMEOUT" ]; do
        is_running || return 1
        "$BINDIR/pg_isready" -q -h "$DIR" -p "$PORT" -t 1 && return 0
        sleep 1
        i=$((i + 1))
    done
    return 1
}

# Starts the server; with an automatic port, retries on another port when
# the one picked was taken meanwhile. Sets PORT.
start_server() {
    auto=$1 configured=$2
    tries=0
    while :; do
        [ "$PORT" = "$configured" ] || append_conf "port = $PORT"
        configured=$PORT
        as_owner sh -c ': >> "$1"' sh "$LOG"
        before=$(wc -l < "$LOG")
        if as_owner "$BINDIR/pg_ctl" start -D "$DATA" -l "$LOG" -w -t "$TIMEOUT" >/dev/null 2>&1; then
            return 0
        fi
        tries=$((tries + 1))
        if [ "$auto" = 1 ] && [ $tries -lt 5 ] &&
           tail -n +$((before + 1)) "$LOG" | grep -q 'Address already in use'; then
            note "port $PORT taken, trying another"
            PORT=$(free_port)
            continue
        fi
        # pg_ctl -w gave up but the postmaster may still be coming up: crash
        # recovery ends with a checkpoint that can outlast the timeout on a
        # loaded machine. Give a live one a second period before stopping it.
        if [ $tries -eq 1 ] && is_running; then
            note "the server is still starting after ${TIMEOUT}s (crash recovery?); waiting another ${TIMEOUT}s"
            if wait_ready; then return 0; fi
        fi
        as_owner "$BINDIR/pg_ctl" stop -D "$DATA" -m immediate -w -t 10 >/dev/null 2>&1 || true
        tail -n +$((before + 1)) "$LOG" | tail -n 20 >&2
        die "the server did not start (log above; the whole log is $LOG)"
    done
}

write_env() {
    auth=$1
    umask 077
    if [ "$auth" = scram ]; then
        printf '127.0.0.1:%s:*:txp:%s\n' "$PORT" "$PASSWORD" > "$DIR/pgpass.tmp"
        mv -f "$DIR/pgpass.tmp" "$DIR/pgpass"
    fi
    umask 022
    {
        echo "# Written by tools/pg/pgtmp.sh start; for \`. $DIR/env\`."
        echo "PGTMP_DIR='$DIR'"
        echo "PGTMP_SOCKET='$DIR'"
        echo "PGTMP_HOST=127.0.0.1"
        echo "PGTMP_PORT=$PORT"
        echo "PGTMP_AUTH=$auth"
        echo "PGTMP_BINDIR='$BINDIR'"
        echo "PGTMP_URI='postgresql://txp@127.0.0.1:$PORT/ledger'"
        if [ "$auth" = scram ]; then
            echo "PGPASSFILE='$DIR/pgpass'"
            echo "export PGPASSFILE"
        fi
    } > "$DIR/env.tmp"
    mv -f "$DIR/env.tmp" "$DIR/env"
}

cmd_start() {
    port="" auth="" settings=""
    set_dir create "${1:-}"; shift
    while [ $# -gt 0 ]; do
        case $1 in
        --port) [ $# -ge 2 ] || usage; port=$2; shift 2 ;;
        --auth) [ $# -ge 2 ] || usage; auth=$2; shift 2 ;;
        --setting) [ $# -ge 2 ] || usage
            name=${2%%=*}
            case $2 in *=*) ;; *) die "--setting wants name=value: $2" ;; esac
            case $name in ''|*[!a-z0-9_.]*) die "bad setting name: $name" ;; esac
            case $2 in *'
'*) die "a setting must be one line" ;; esac
            settings="$settings$name = ${2#*=}
"
            shift 2 ;;
        *) usage ;;
        esac
    done
    case $port in ''|*[!0-9]*) [ -z "$port" ] || die "bad port: $port" ;; esac
    case $auth in ''|trust|scram) ;; *) die "--auth is trust or scram, not $auth" ;; esac
    find_bindir
    sock="$DIR/.s.PGSQL.65535"
    [ ${#sock} -le 107 ] || die "DIR is too long for a unix socket path (107 bytes): $DIR"

    fresh=0
    if [ -f "$DATA/PG_VERSION" ] && [ -f "$DIR/env" ]; then
        had=$(env_get PGTMP_AUTH)
        [ -z "$auth" ] || [ "$auth" = "$had" ] ||
            die "$DIR was made with --auth $had; destroy it to change that"
        auth=$had
        if is_running; then
            [ -z "$port" ] || [ "$port" = "$(env_get PGTMP_PORT)" ] ||
                die "already running on port $(env_get PGTMP_PORT); stop it first"
            [ -z "$settings" ] || die "already running; stop it before changing settings"
            note "already running"
            env_get PGTMP_URI
            return 0
        fi
    else
        fresh=1
        auth=${auth:-trust}
        [ ! -e "$DATA" ] || die "$DATA exists but its set-up never finished; run: $0 destroy $DIR"
        # From here a fresh cluster that fails to come up is removed again.
        trap 'fail_fresh' EXIT
        initdb_cluster "$auth"
    fi

    [ -z "$settings" ] || append_conf "# --setting" "${settings%?}"
    auto=0
    if [ -n "$port" ]; then PORT=$port
    elif [ $fresh = 0 ]; then PORT=$(env_get PGTMP_PORT); auto=1
    else PORT=$(free_port); auto=1
    fi
    start_server $auto "$(env_get PGTMP_PORT)"

    PASSWORD=""
    if [ "$auth" = scram ]; then
        if [ $fresh = 1 ]; then
            PASSWORD=$(od -An -tx1 -N24 /dev/urandom | tr -d ' \n')
        else
            PASSWORD=$(sed -n 's/^[^:]*:[^:]*:[^:]*:txp://p' "$DIR/pgpass" 2>/dev/null | tail -n 1)
            [ -n "$PASSWORD" ] || die "$DIR/pgpass lost txp's password; destroy the cluster and start again"
        fi
    fi
    if [ $fresh = 1 ]; then
        # printf is a shell builtin: the password is never in an argument list.
        # A failing statement would be logged with its text, the password too.
        pwclause=""
        [ -z "$PASSWORD" ] || pwclause=" PASSWORD '$PASSWORD'"
        printf "SET log_min_error_statement = panic;
CREATE ROLE txp LOGIN CREATEDB%s;
CREATE DATABASE ledger OWNER txp;
" "$pwclause" | admin_sql "$PORT" ||
            die "creating the role txp and the database ledger failed"
    fi
    write_env "$auth"
    trap - EXIT
    echo "postgresql://txp@127.0.0.1:$PORT/ledger"
}

fail_fresh() {
    rc=$?
    [ $rc -ne 0 ] || return 0
    as_owner "$BINDIR/pg_ctl" stop -D "$DATA" -m immediate -w -t 10 >/dev/null 2>&1 || true
    rm -rf -- "$DATA" "$DIR/env" "$DIR/pgpass"
    note "the new cluster was removed; its log stays in $LOG"
    exit $rc
}

# Stops the server in the given mode; a fast stop that does not finish falls
# back to immediate, and an immediate one that does not to SIGKILL.
stop_server() {
    mode=$1
    is_running || return 0
    if [ "$mode" = fast ]; then
        as_owner "$BINDIR/pg_ctl" stop -D "$DATA" -m fast -w -t "$TIMEOUT" >/dev/null 2>&1 && return 0
        note "fast shutdown did not finish in ${TIMEOUT}s; immediate shutdown"
    fi
    as_owner "$BINDIR/pg_ctl" stop -D "$DATA" -m immediate -w -t "$TIMEOUT" >/dev/null 2>&1 && return 0
    pid=$(head -n 1 "$DATA/postmaster.pid" 2>/dev/null || true)
    case $pid in ''|*[!0-9]*) die "cannot stop the server in $DATA" ;; esac
    note "immediate shutdown did not finish; SIGKILL to postmaster $pid"
    kill -KILL "$pid" 2>/dev/null || true
    i=0
    while kill -0 "$pid" 2>/dev/null; do
        i=$((i + 1)); [ $i -lt 50 ] || die "postmaster $pid survives SIGKILL"
        sleep 0.1
    done
}

cmd_stop() {
    set_dir exists "${1:-}"
    [ $# -le 1 ] || usage
    [ -f "$DATA/PG_VERSION" ] || return 0
    find_bindir
    stop_server fast
}

cmd_restart() {
    set_dir exists "${1:-}"; shift
    mode=fast
    case "${1:-}" in
    '') ;;
    --mode) [ $# -eq 2 ] || usage; mode=$2 ;;
    *) usage ;;
    esac
    case $mode in fast|immediate) ;; *) die "--mode is fast or immediate, not $mode" ;; esac
    if [ ! -f "$DATA/PG_VERSION" ] || [ ! -f "$DIR/env" ]; then die "no cluster in $DIR"; fi
    find_bindir
    stop_server "$mode"
    cmd_start "$DIR"
}

cmd_status() {
    set_dir exists "${1:-}"
    [ $# -le 1 ] || usage
    if [ ! -f "$DATA/PG_VERSION" ]; then echo "no cluster in $DIR"; exit 4; fi
    find_bindir
    if is_running; then
        echo "running: $(env_get PGTMP_URI) (postmaster $(head -n 1 "$DATA/postmaster.pid"))"
    else
        echo "stopped"; exit 3
    fi
}

cmd_destroy() {
    set_dir exists "${1:-}"
    [ $# -le 1 ] || usage
    [ -e "$DIR" ] || return 0
    # Refuse to remove what does not look like ours: an empty directory, or one
    # with our env file or a cluster in data/.
    if [ -n "$(ls -A -- "$DIR")" ] && [ ! -f "$DIR/env" ] && [ ! -f "$DATA/PG_VERSION" ] &&
       [ ! -f "$DIR/initdb.log" ]; then
        die "$DIR does not look like a pgtmp.sh cluster; not removing it"
    fi
    if [ -f "$DATA/PG_VERSION" ]; then find_bindir; stop_server fast; fi
    rm -rf -- "$DIR"
}

cmd_psql() {
    set_dir exists "${1:-}"; shift
    port=$(env_get PGTMP_PORT)
    [ -n "$port" ] || die "no cluster in $DIR"
    find_bindir
    exec "$BINDIR/psql" -X -h "$DIR" -p "$port" -U txp -d ledger "$@"
}

[ $# -ge 2 ] || usage
cmd=$1; shift
case $cmd in
start) cmd_start "$@" ;;
stop) cmd_stop "$@" ;;
restart) cmd_restart "$@" ;;
status) cmd_status "$@" ;;
destroy) cmd_destroy "$@" ;;
psql) cmd_psql "$@" ;;
*) usage ;;
esac
