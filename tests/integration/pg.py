"""A throwaway PostgreSQL cluster for the integration tests of the PostgreSQL
ledger: a real server (tools/pg/pgtmp.sh), one per pytest process, with an
empty database for each test that wants one.

    import pg
    c = pg.cluster()                # started on first use, gone at exit
    uri = c.new_database()          # postgresql://txp@127.0.0.1:PORT/t_1
    conn = pg.connect(uri)          # psycopg2, autocommit
    c.terminate_backends("t_1", application_name="txprocd")
    c.restart("immediate")          # a crash and its recovery

cluster() puts the cluster in /tmp/txp-pg-<pytest pid> and removes it when
the interpreter exits (atexit). Should pytest die without running atexit
(SIGKILL, a crash), a watchdog process notices that its pipe from pytest is
closed and destroys the cluster itself; and the next cluster() removes any
/tmp/txp-pg-<pid> whose pid is gone, in case the watchdog died too.
"""
import atexit
import itertools
import os
import re
import shlex
import subprocess
from pathlib import Path

try:
    import psycopg2
    import psycopg2.sql
except ImportError:  # the SQLite-only suite does not need it
    psycopg2 = None

ROOT = Path(__file__).resolve().parents[2]
PGTMP = ROOT / "tools" / "pg" / "pgtmp.sh"
TMP = Path("/tmp")                 # short: the socket path must fit 107 bytes
DIR_PREFIX = "txp-pg-"
PGTMP_TIMEOUT = 240                # seconds for any one pgtmp.sh command (its own waits are 60 s, a start after a crash may take two)
TERMINATE_WAIT_MS = 5000           # pg_terminate_backend waits this long for each exit


def connect(uri, **kwargs):
    """A psycopg2 connection to uri in autocommit mode."""
    if psycopg2 is None:
        raise RuntimeError("psycopg2 is missing: apt-get install python3-psycopg2")
    conn = psycopg2.connect(uri, **kwargs)
    conn.autocommit = True
    return conn


def _conf_value(value):
    """value as postgresql.conf wants it: bare when simple, else quoted."""
    if isinstance(value, bool):
        return "on" if value else "off"
    text = str(value)
    if re.fullmatch(r"[A-Za-z0-9_.+-]+", text):
        return text
    return "'" + text.replace("'", "''") + "'"


class PgCluster:
    """One pgtmp.sh cluster: start, stop, crash, fresh databases, and the
    superuser's view (terminate backends, drop databases)."""

    def __init__(self, directory):
        self.dir = Path(directory)
        self.env = {}           # DIR/env: PGTMP_PORT, PGTMP_URI, PGPASSFILE...
        self._admin = None
        self._db_counter = itertools.count(1)

    # -- lifecycle ---------------------------------------------------------

    def _pgtmp(self, *args, check=True):
        proc = subprocess.run(["sh", str(PGTMP), *args], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, timeout=PGTMP_TIMEOUT)
        if check and proc.returncode != 0:
            raise RuntimeError("pgtmp.sh %s failed (%d):\n%s"
                               % (" ".join(args), proc.returncode, proc.stderr))
        return proc

    def _read_env(self):
        env = {}
        for line in (self.dir / "env").read_text().splitlines():
            m = re.fullmatch(r"([A-Z_]+)=(.*)", line)
            if m:
                env[m.group(1)] = shlex.split(m.group(2))[0] if m.group(2) else ""
        self.env = env

    def start(self, directory=None, *, port=None, auth="trust", **settings):
        """Creates (first time) and starts the cluster; keyword arguments are
        postgresql.conf settings (synchronous_commit="off")."""
        if directory is not None:
            self.dir = Path(directory)
        args = ["start", str(self.dir), "--auth", auth]
        if port is not None:
            args += ["--port", str(port)]
        for name, value in settings.items():
            args += ["--setting", "%s=%s" % (name, _conf_value(value))]
        self._pgtmp(*args)
        self._read_env()
        return self

    def stop(self):
        self._close_admin()
        self._pgtmp("stop", str(self.dir))

    def restart(self, mode="fast"):
        """Stops ("fast", or "immediate": a crash, with recovery on start)
        and starts again on the same port."""
        self._close_admin()
        self._pgtmp("restart", str(self.dir), "--mode", mode)
        self._read_env()

    def destroy(self):
        self._close_admin()
        self._pgtmp("destroy", str(self.dir))

    def running(self):
        return self._pgtmp("status", str(self.dir), check=False).returncode == 0

    # -- addresses ---------------------------------------------------------

    @property
    def port(self):
        return int(self.env["PGTMP_PORT"])

    def uri(self, dbname="ledger", user="txp"):
        return "postgresql://%s@127.0.0.1:%d/%s" % (user, self.port, dbname)

    def client_env(self):
        """What a client process needs in its environment beyond the URI
        (PGPASSFILE when the cluster uses scram)."""
        return {"PGPASSFILE": self.env["PGPASSFILE"]} if "PGPASSFILE" in self.env else {}

    # -- the superuser -----------------------------------------------------

    def admin(self):
        """The superuser's connection (over the unix socket, autocommit),
        opened again after a restart or a lost connection."""
        if self._admin is not None and not self._admin.closed:
            try:
                with self._admin.cursor() as cur:
                    cur.execute("SELECT 1")
                return self._admin
            except psycopg2.Error:
                self._close_admin()
        self._admin = connect("", host=self.env["PGTMP_SOCKET"], port=self.port,
                              user="postgres", dbname="postgres",
                              application_name="txp-tests-admin")
        return self._admin

    def _close_admin(self):
        if self._admin is not None:
            try:
                self._admin.close()
            except Exception:
                pass
            self._admin = None

    def new_database(self, prefix="t"):
        """A new empty database owned by txp; returns its URI.

        FILE_COPY rather than PostgreSQL 15's default WAL_LOG: WAL_LOG leaves
        each new database's ~300 files to the next checkpoint, so after a
        hundred tests a crash restart (restart("immediate")) spends its
        end-of-recovery checkpoint fsyncing tens of thousands of files, 25 s
        on an idle machine and past pg_ctl's start timeout on a loaded one.
        FILE_COPY syncs them at creation, about 30 ms more per database."""
        while True:
            name = "%s_%d" % (prefix, next(self._db_counter))
            try:
                with self.admin().cursor() as cur:
                    cur.execute(psycopg2.sql.SQL(
                        "CREATE DATABASE {} OWNER txp STRATEGY = FILE_COPY").format(
                            psycopg2.sql.Identifier(name)))
                return self.uri(name)
            except psycopg2.errors.DuplicateDatabase:
                continue

    def terminate_backends(self, dbname, application_name=None):
        """Ends the sessions on dbname (only application_name's when given),
        waiting for each to exit; returns how many were ended."""
        query = ("SELECT count(*) FILTER (WHERE pg_terminate_backend(pid, %s))"
                 " FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()")
        params = [TERMINATE_WAIT_MS, dbname]
        if application_name is not None:
            query += " AND application_name = %s"
            params.append(application_name)
        with self.admin().cursor() as cur:
            cur.execute(query, params)
            return cur.fetchone()[0]

    def drop_database(self, name):
        """Drops name even with sessions open on it (WITH (FORCE))."""
        with self.admin().cursor() as cur:
            cur.execute(psycopg2.sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
                psycopg2.sql.Identifier(name)))


# --------------------------------------------------------------------------
# one cluster per pytest process

_cluster = None
_watchdog = None


def _pid_alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _remove_orphans():
    """Destroys the clusters of pytest processes that are gone."""
    for path in TMP.glob(DIR_PREFIX + "*"):
        m = re.fullmatch(re.escape(DIR_PREFIX) + r"(\d+)", path.name)
        if m and int(m.group(1)) != os.getpid() and not _pid_alive(int(m.group(1))):
            subprocess.run(["sh", str(PGTMP), "destroy", str(path)], timeout=PGTMP_TIMEOUT,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _start_watchdog(directory):
    """A process that destroys the cluster once this one is gone: it waits for
    end-of-file on a pipe that only this process holds open. Its own session,
    so a ^C to the test run does not end it before it has done so."""
    script = 'read -r _ || :; exec sh "$0" destroy "$1" >/dev/null 2>&1'
    return subprocess.Popen(["sh", "-c", script, str(PGTMP), str(directory)],
                            stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)


def _shutdown():
    global _cluster, _watchdog
    if _cluster is not None:
        try:
            _cluster.destroy()
        finally:
            _cluster = None
            if _watchdog is not None:
                _watchdog.stdin.close()     # nothing left for it to do
                _watchdog.wait(timeout=PGTMP_TIMEOUT)
                _watchdog = None


def cluster():
    """This process's cluster (trust authentication), started on first call
    in /tmp/txp-pg-<pid> and destroyed when the process exits."""
    global _cluster, _watchdog
    if _cluster is None:
        _remove_orphans()
        directory = TMP / ("%s%d" % (DIR_PREFIX, os.getpid()))
        if directory.exists():          # left by an earlier process with our pid
            subprocess.run(["sh", str(PGTMP), "destroy", str(directory)], check=True,
                           timeout=PGTMP_TIMEOUT)
        _watchdog = _start_watchdog(directory)
        atexit.register(_shutdown)
        _cluster = PgCluster(directory).start()
    return _cluster
