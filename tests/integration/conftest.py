"""Shared machinery for the black-box tests: start a real txprocd on a seeded
temporary ledger, talk to it over HTTP and through txctl, read its ledger
directly (SQLite file or PostgreSQL database), and always clean up every
process it started.

BACKENDS
  Every test that uses the backend fixture (directly, or through server,
  server_factory or shared_server) runs once per ledger backend: "sqlite"
  (a file in the test's directory) and "postgres" (a fresh database in one
  throwaway PostgreSQL cluster per pytest process, tests/integration/pg.py).
  TXP_TEST_BACKENDS=sqlite (or postgres) narrows the run. A test marked
  sqlite_only (it pokes at SQLite files: WAL locks, copies, a full tmpfs,
  fsyncs) or backend_independent (HTTP parsing, segment hardening, the
  supervisor's handling of children: the ledger plays no part) runs on
  SQLite only; tests/integration/test_postgres.py has what only PostgreSQL
  must survive. Ledger helpers (db_query, balance_sum,
  ledger_invariant...) take either a path or a PostgreSQL URI.

Binaries come from $TXP_BUILD (default "build") relative to the repository
root, so the same suite runs against build/ and build-san/.
"""
import collections
import http.client
import itertools
import json
import os
import random
import re
import signal
import socket
import sqlite3
import subprocess
import threading
import time
from pathlib import Path

import pytest
import requests

import pg

ROOT = Path(__file__).resolve().parents[2]
BUILD = ROOT / os.environ.get("TXP_BUILD", "build")
# The suite runs txprocd-test: txprocd with its failpoints live
# (common/failpoint.h). TXPROCD_RELEASE is what `make run` and `make install` use.
TXPROCD = BUILD / "txprocd-test"
TXPROCD_RELEASE = BUILD / "txprocd"
TXCTL = BUILD / "txctl"

HTTP_TIMEOUT = 10          # seconds, every HTTP call
READY_TIMEOUT = 10         # /healthz must answer within this after start
STOP_TIMEOUT = 20          # SIGTERM -> exit
FINAL_STATUSES = {"applied", "insufficient_funds", "unknown_account", "rejected", "duplicate"}
INT64_MAX = 2 ** 63 - 1
JSON = {"Content-Type": "application/json"}


def card(n):
    """Card number of seeded demo account n (0..9999)."""
    return "6219 8619 %04d 8640" % n


def unknown_card(n):
    """A well-formed card number that txctl seed never creates."""
    return "6219 8619 %04d 8641" % n


# --------------------------------------------------------------------------
# processes


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


_shm_counter = itertools.count()


def unique_shm_name():
    return "/txp-test-%d-%d" % (os.getpid(), next(_shm_counter))


def clean_env(extra=None):
    """The test runner's environment without any TXP_* setting, plus extra."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TXP_")}
    env.update(extra or {})
    return env


def group_members(pgid):
    """Live (non-zombie) pids whose process group is pgid."""
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % entry) as f:
                stat = f.read()
        except OSError:
            continue
        # comm may contain spaces; the fields after the last ')' are fixed.
        fields = stat[stat.rfind(")") + 2:].split()
        if fields[0] != "Z" and int(fields[2]) == pgid:
            pids.append(int(entry))
    return pids


def proc_state(pid):
    """The one-letter state of pid from /proc (R, S, T, Z...), None if gone."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            stat = f.read()
    except OSError:
        return None
    return stat[stat.rfind(")") + 2:].split()[0]


def pid_alive(pid):
    return proc_state(pid) not in (None, "Z")


def wait_until(predicate, timeout, what, interval=0.05):
    """Polls predicate() until it returns a truthy value; fails after timeout."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail("timed out after %.1fs waiting for %s" % (timeout, what))
        time.sleep(interval)


def run_txctl(*args, timeout=60, check=True):
    proc = subprocess.run([str(TXCTL), *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, env=clean_env())
    if check and proc.returncode != 0:
        pytest.fail("txctl %s exited %d: %s" % (" ".join(map(str, args)), proc.returncode,
                                                 proc.stderr.strip()))
    return proc


def seed_db(path, accounts=1000, seed=1):
    run_txctl("seed", "--db", path, "--accounts", accounts, "--seed", seed, timeout=120)
    return Path(path)


def is_pg(db):
    return str(db).startswith("postgresql://")


def new_pg_db():
    """The URI of a fresh, empty database in this run's PostgreSQL cluster."""
    return pg.cluster().new_database()


def seed_pg_db(accounts=1000, seed=1):
    uri = new_pg_db()
    run_txctl("seed", "--db", uri, "--accounts", accounts, "--seed", seed, timeout=120)
    return uri


def seed_ledger(backend, path, accounts=1000, seed=1):
    """A seeded ledger of that backend: path for SQLite, a new database for
    PostgreSQL. Returns what --db takes."""
    if backend == "postgres":
        return seed_pg_db(accounts, seed)
    return seed_db(path, accounts, seed)


def run_txprocd_briefly(args, env=None, timeout=10):
    """Runs txprocd expecting it to exit on its own (--help, bad config).
    Returns (returncode, stdout, stderr); a server that keeps running is
    killed and reported as returncode None."""
    proc = subprocess.Popen([str(TXPROCD), *map(str, args)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=clean_env(env),
                            start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout)
        rc = proc.returncode
    except subprocess.TimeoutExpired:
        _kill_group(proc.pid)
        out, err = proc.communicate(timeout=10)
        rc = None
    finally:
        _kill_group(proc.pid)
    reports = sanitizer_lines(err)
    if reports:
        pytest.fail("sanitizer reports from txprocd %s:\n%s" % (" ".join(map(str, args)),
                                                              "\n".join(reports[:20])))
    return rc, out, err


def sanitizer_lines(text):
    return [line for line in text.splitlines()
            if re.search(r"ERROR: \w+Sanitizer|runtime error:|SUMMARY: \w+Sanitizer", line)]


def _kill_group(pgid):
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


# Servers started by the tests, so a failing test's report can show their logs.
_SERVERS = []


class Server:
    """One txprocd instance in its own session (process group), on a free
    loopback port and a unique shared-memory name, logging to a file."""

    def __init__(self, workdir, db=None, accounts=1000, seed=1, args=(), env=None,
                 workers=None, frontends=None, via_env=False, omit=(), binary=None,
                 backend="sqlite"):
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        if db:
            self.db = db if is_pg(db) else Path(db)
        else:
            self.db = seed_ledger(backend, self.workdir / "users.db", accounts, seed)
        self.backend = "postgres" if is_pg(self.db) else "sqlite"
        self.extra_args = [str(a) for a in args]
        if workers is not None:
            self.extra_args += ["--workers", str(workers)]
        if frontends is not None:
            self.extra_args += ["--frontends", str(frontends)]
        self.env = env or {}
        self.via_env = via_env  # pass listen/db/shm name as TXP_* variables, not flags
        self.omit = set(omit)   # of "--db", "--shm-name": rely on the server's default
        self.binary = str(binary or TXPROCD)
        self.shm_name = unique_shm_name()
        self.port = None
        self.proc = None
        self.returncode = None
        self.ended_at = None
        self.log_path = self.workdir / ("txprocd-%s.log" % self.shm_name.rsplit("-", 1)[1])
        self._log = None
        self.session = requests.Session()
        _SERVERS.append(self)

    # ---- lifecycle

    @property
    def base(self):
        return "http://127.0.0.1:%d" % self.port

    @property
    def pid(self):
        return self.proc.pid

    def start(self, wait=True):
        """Starts txprocd; with wait, returns once it serves and every child
        runs (retrying on a lost port race), else right after the fork."""
        for _attempt in range(3):
            self.port = free_port()
            self._log = open(self.log_path, "ab")
            if "--shm-name" in self.omit:
                self.shm_name = "/txprocd-%d" % self.port
            where = {"--listen": "127.0.0.1:%d" % self.port, "--db": str(self.db),
                     "--shm-name": self.shm_name}
            for flag in self.omit:
                del where[flag]
            env = dict(self.env)
            if self.via_env:
                names = {"--listen": "TXP_LISTEN", "--db": "TXP_DB_PATH", "--shm-name": "TXP_SHM_NAME"}
                env.update({names[flag]: value for flag, value in where.items()})
                argv = [self.binary, *self.extra_args]
            else:
                argv = [self.binary, *[x for kv in where.items() for x in kv], *self.extra_args]
            self._log.write(("# %s\n" % " ".join(argv)).encode())
            self._log.flush()
            self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=self._log,
                                         stderr=self._log, env=clean_env(env),
                                         start_new_session=True, cwd=self.workdir)
            self.returncode = None
            self.ended_at = None
            if not wait:
                return self
            if self._wait_ready():
                self.wait_children_running()
                return self
            # Lost a race for the port: try another one. Only that: the
            # ledger's and the segment's "in use" refusals are for tests to see.
            if self.proc.poll() is not None and "Address already in use" in self.log_tail(20):
                self._reap()
                continue
            break
        tail = self.log_tail()
        self.kill()
        pytest.fail("txprocd did not become ready in %ds (exit %r)\n%s"
                    % (READY_TIMEOUT, self.returncode, tail))

    def _wait_ready(self):
        deadline = time.monotonic() + READY_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                return False
            try:
                r = requests.get(self.base + "/healthz", timeout=1)
                if r.status_code == 200:
                    return True
            except requests.RequestException:
                pass
            time.sleep(0.05)
        return False

    def wait_children_running(self, timeout=READY_TIMEOUT):
        wait_until(lambda: all(c["state"] == "running" for c in self.children()), timeout,
                   "every child to be running", interval=0.1)

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def signal(self, sig):
        self.proc.send_signal(sig)

    def terminate(self, timeout=STOP_TIMEOUT):
        """SIGTERM and wait; returns the exit code (None if it did not exit,
        in which case everything is killed)."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            return None
        self._reap()
        return self.returncode

    def kill(self):
        """SIGKILL the whole process group (master and children)."""
        if self.proc is None:
            return
        _kill_group(self.proc.pid)
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass
        self._reap()

    def _reap(self):
        self.returncode = self.proc.poll()
        if self.ended_at is None:
            self.ended_at = time.monotonic()
        if self._log:
            self._log.close()
            self._log = None

    def leftover_children(self, timeout=3):
        """Processes of this instance still alive after the master exited
        (killed before returning)."""
        deadline = time.monotonic() + timeout
        while True:
            left = group_members(self.proc.pid)
            if not left or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        _kill_group(self.proc.pid)
        return left

    def cleanup(self):
        """Kills anything left and removes the shm segment. Idempotent."""
        try:
            if self.proc is not None:
                if self.proc.poll() is None:
                    self.kill()
                _kill_group(self.proc.pid)
        finally:
            try:
                os.unlink("/dev/shm" + self.shm_name)
            except OSError:
                pass
            self.session.close()

    def stop_and_check(self):
        """Graceful stop expected to succeed: exit 0, no child left, and no
        sanitizer report in the log (a crashing child would otherwise just be
        restarted without anyone noticing)."""
        try:
            if self.proc is None:
                return
            if self.proc.poll() is not None:
                # terminate()/kill() record ended_at; anything else is a crash.
                unexpected = self.ended_at is None
                self._reap()
                assert not unexpected, "txprocd died on its own with code %r\n%s" % (
                    self.returncode, self.log_tail())
            else:
                rc = self.terminate()
                assert rc == 0, "txprocd exit code %r after SIGTERM\n%s" % (rc, self.log_tail())
                left = self.leftover_children()
                assert not left, "processes outlived the master: %r\n%s" % (left, self.log_tail())
            reports = self.sanitizer_reports()
            assert not reports, "sanitizer reports in the server log:\n%s" % "\n".join(reports[:20])
        finally:
            self.cleanup()

    def sanitizer_reports(self):
        return sanitizer_lines(self.log_text())

    def log_text(self):
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def log_tail(self, n=60):
        return "\n".join(self.log_text().splitlines()[-n:])

    # ---- HTTP

    def get(self, path, **kw):
        kw.setdefault("timeout", HTTP_TIMEOUT)
        return self.session.get(self.base + path, **kw)

    def post(self, path, **kw):
        kw.setdefault("timeout", HTTP_TIMEOUT)
        return self.session.post(self.base + path, **kw)

    def request(self, method, path, **kw):
        kw.setdefault("timeout", HTTP_TIMEOUT)
        return self.session.request(method, self.base + path, **kw)

    def post_tx(self, card_number, amount):
        return self.post("/transaction", json={"card_number": card_number, "amount": amount})

    def submit(self, card_number, amount):
        """POST that must be accepted; returns the txid as an int."""
        r = self.post_tx(card_number, amount)
        assert r.status_code == 202, (r.status_code, r.text)
        return int(r.json()["id"])

    def post_json(self, path, body, headers=None, **kw):
        """POST body (a dict/list, or raw str/bytes) as application/json."""
        data = body if isinstance(body, (str, bytes)) else json.dumps(body)
        return self.post(path, data=data, headers={**JSON, **(headers or {})}, **kw)

    def transfer(self, src, dst, amount, headers=None, **kw):
        return self.post_json("/transfer", {"from": src, "to": dst, "amount": amount}, headers, **kw)

    def balance(self, card_number):
        """The ledger's balance of card_number, None if no such account."""
        rows = self.query("SELECT balance FROM users WHERE card_number = ?", (card_number,))
        return rows[0][0] if rows else None

    def metrics(self):
        r = self.get("/metrics")
        assert r.status_code == 200, r.text
        return r.json()

    def transaction(self, txid):
        return self.get("/transaction/%s" % txid)

    # ---- txctl

    def txctl(self, *args, check=True, timeout=20):
        return run_txctl("--shm-name", self.shm_name, *args, check=check, timeout=timeout)

    def txctl_json(self, *args):
        return json.loads(self.txctl(*args, "--json").stdout)

    def children(self):
        return self.txctl_json("children")["children"]

    def running_child(self, role):
        return next(c for c in self.children() if c["role"] == role and c["state"] == "running")

    def wait_restarted(self, slot, old_pid, timeout=15):
        """Waits for child slot to run again under a new pid after old_pid
        died; returns its children row."""
        def restarted():
            for c in self.children():
                if c["slot"] == slot and c["pid"] not in (old_pid, 0, None) \
                        and c["state"] == "running" and c["restarts"] >= 1:
                    return c
            return None
        return wait_until(restarted, timeout, "slot %d (pid %d) to be restarted" % (slot, old_pid),
                          interval=0.1)

    def child_pids(self, role):
        return [c["pid"] for c in self.children() if c["role"] == role and c["state"] != "exited"]

    def queue(self):
        return self.txctl_json("queue")

    # ---- ledger

    def query(self, sql, args=()):
        return db_query(self.db, sql, args)

    def wait_final(self, txids, timeout=60):
        return wait_final(self.db, txids, timeout)


def assert_error(r, code, field=None, message=None):
    """r is a JSON error answer with this code; its message names field, or
    is exactly message. Returns the body."""
    assert r.status_code == code, (r.status_code, r.text)
    assert r.headers.get("Content-Type", "").startswith("application/json"), r.headers
    body = r.json()
    assert body.get("status") == "error", body
    assert isinstance(body.get("message"), str) and body["message"], body
    if field:
        assert field in body["message"], "message does not name %r: %r" % (field, body)
    if message is not None:
        assert body == {"status": "error", "message": message}, body
    return body


def prefer_wait(n):
    return {"Prefer": "wait=%d" % n}


def wait_txn(srv, txid, timeout=15):
    """Polls GET /transaction/<txid> until its status is final; returns the
    body."""
    def final():
        r = srv.transaction(txid)
        assert r.status_code == 200, (txid, r.status_code, r.text)
        body = r.json()
        return body if body["status"] in FINAL_STATUSES else None
    return wait_until(final, timeout, "transaction %s to be final" % txid, interval=0.02)


def raw_request(port, data, timeout=HTTP_TIMEOUT):
    """Sends data (bytes, one whole HTTP/1.1 request) on a new connection,
    bypassing the client libraries' header checks. Returns (status,
    {lower-case header: value}, body bytes)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(data)
        resp = http.client.HTTPResponse(sock)
        resp.begin()
        body = resp.read()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, body


def _tcp_inode(server_port, client_port):
    """Inode of the server side of the loopback connection from client_port
    (from /proc/net/tcp), None if not there."""
    with open("/proc/net/tcp") as f:
        next(f)
        for line in f:
            fields = line.split()
            local, remote, inode = fields[1], fields[2], fields[9]
            if int(local.split(":")[1], 16) == server_port \
                    and int(remote.split(":")[1], 16) == client_port:
                return inode
    return None


def connection_owner(server_port, client_port, pids):
    """Which of pids holds the accepted end of the connection from
    client_port, None if none (yet)."""
    inode = _tcp_inode(server_port, client_port)
    if inode is None:
        return None
    target = "socket:[%s]" % inode
    for pid in pids:
        try:
            fds = os.listdir("/proc/%d/fd" % pid)
        except OSError:
            continue
        for fd in fds:
            try:
                if os.readlink("/proc/%d/fd/%s" % (pid, fd)) == target:
                    return pid
            except OSError:
                continue
    return None


def connections_on_every_frontend(srv, per_frontend, timeout=30):
    """Opens keep-alive connections until each running frontend has accepted
    per_frontend of them (the frontends share one listening socket, so which
    one accepts is up to the kernel). Returns {frontend pid: [connections]}."""
    frontends = srv.child_pids("frontend")
    assert len(frontends) >= 2, srv.children()
    kept = {pid: [] for pid in frontends}
    deadline = time.monotonic() + timeout
    try:
        while any(len(c) < per_frontend for c in kept.values()):
            if time.monotonic() > deadline:
                pytest.fail("could not spread connections over the frontends: %r"
                            % {p: len(c) for p, c in kept.items()})
            conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=HTTP_TIMEOUT)
            conn.connect()
            client_port = conn.sock.getsockname()[1]
            owner = wait_until(lambda: connection_owner(srv.port, client_port, frontends), 5,
                               "a frontend to accept the connection from port %d" % client_port,
                               interval=0.005)
            if len(kept[owner]) < per_frontend:
                kept[owner].append(conn)
            else:
                conn.close()
    except BaseException:
        for conns in kept.values():
            for c in conns:
                c.close()
        raise
    return kept


def sigstop(pid):
    """SIGSTOP and wait until the process is really stopped."""
    os.kill(pid, signal.SIGSTOP)
    wait_until(lambda: proc_state(pid) in ("T", "t", None), 5, "pid %d to stop" % pid, interval=0.001)


def stop_workers(srv):
    """SIGSTOPs every worker of srv; returns their pids for cont_workers."""
    pids = srv.child_pids("worker")
    assert pids, srv.children()
    for pid in pids:
        sigstop(pid)
    return pids


def cont_workers(pids):
    for pid in pids:
        try:
            os.kill(pid, signal.SIGCONT)
        except ProcessLookupError:
            pass


def stop_holding_claim(srv, pid, attempts=300):
    """SIGSTOPs worker pid at a moment when it holds an unacknowledged claim
    (the server has a single worker); returns the claim size. Every tenth
    miss lets the worker run for 100 ms: stopping it again at once, try
    after try, kept it stopped most of the time, which on a slow (sanitizer)
    build starved its heartbeat until the master killed it."""
    for attempt in range(attempts):
        sigstop(pid)
        claimed = srv.queue()["claimed"]
        if claimed:
            return claimed
        os.kill(pid, signal.SIGCONT)
        time.sleep(0.1 if attempt % 10 == 9 else 0.005)
    pytest.fail("worker never caught holding a claim")


# --------------------------------------------------------------------------
# ledger


def db_connect(path):
    con = sqlite3.connect("file:%s?mode=ro" % path, uri=True, timeout=10)
    con.execute("PRAGMA busy_timeout = 10000")
    return con


def _pg_sql(sql):
    """SQLite's ? placeholders as psycopg2's %s (and a literal % doubled)."""
    return sql.replace("%", "%%").replace("?", "%s")


def db_query(db, sql, args=()):
    """Rows of sql on either backend, as tuples; numbers as Python ints."""
    if is_pg(db):
        con = pg.connect(db)
        try:
            with con.cursor() as cur:
                cur.execute(_pg_sql(sql), tuple(args))
                rows = cur.fetchall() if cur.description else []
        finally:
            con.close()
        # SUM() is numeric on PostgreSQL: make it the int SQLite returns.
        return [tuple(int(v) if type(v).__name__ == "Decimal" else v for v in r) for r in rows]
    con = db_connect(db)
    try:
        return con.execute(sql, args).fetchall()
    finally:
        con.close()


def db_exec(db, sql, args=()):
    """Runs one writing statement on either backend and commits it."""
    if is_pg(db):
        con = pg.connect(db)
        try:
            with con.cursor() as cur:
                cur.execute(_pg_sql(sql), tuple(args))
        finally:
            con.close()
        return
    con = sqlite3.connect(str(db), timeout=10)
    try:
        con.execute(sql, args)
        con.commit()
    finally:
        con.close()


class ledger_write_lock:
    """Holds the ledger's write lock for the with block, as another writer
    would: workers block on it (and retry past their lock timeout) while
    reads go on. SQLite: BEGIN IMMEDIATE. PostgreSQL: users in EXCLUSIVE
    mode, which SELECT ... FOR UPDATE waits for and plain SELECTs do not."""

    def __init__(self, db):
        self.db = db

    def __enter__(self):
        if is_pg(self.db):
            self.con = pg.connect(self.db)
            self.con.autocommit = False
            self.con.cursor().execute("LOCK TABLE users IN EXCLUSIVE MODE")
        else:
            self.con = sqlite3.connect(str(self.db), timeout=10, isolation_level=None)
            self.con.execute("BEGIN IMMEDIATE")
        return self

    def __exit__(self, *exc):
        try:
            self.con.rollback() if is_pg(self.db) else self.con.execute("ROLLBACK")
        finally:
            self.con.close()


def balance_sum(db):
    # Summed in Python: one account may legitimately sit near INT64_MAX, and
    # SQLite's SUM() raises on int64 overflow.
    return sum(b for (b,) in db_query(db, "SELECT balance FROM users"))


def ledger_invariant(path, initial_sum):
    """Money is neither created nor lost: the balances sum to the initial sum
    (taken before the first txprocd start) plus every applied amount that
    brings money in or takes it out (deposits, withdrawals and account
    openings; a transfer only moves money, so it is left out); no balance is
    negative; every status is a known final one; every transfer row is one
    positive amount with its counterparty."""
    total = balance_sum(path)
    # Rows without a txid predate txprocd (a migrated prototype ledger);
    # rows without a kind predate transfers (the sign of amount tells).
    applied = db_query(path, "SELECT COALESCE(SUM(amount), 0) FROM transactions "
                             "WHERE txid IS NOT NULL AND status = 'applied' "
                             "AND COALESCE(kind, '') <> 'transfer'")[0][0]
    negative = db_query(path, "SELECT card_number, balance FROM users WHERE balance < 0 LIMIT 5")
    statuses = {s for (s,) in db_query(path, "SELECT DISTINCT status FROM transactions "
                                             "WHERE txid IS NOT NULL")}
    bad_transfers = db_query(
        path, "SELECT txid, amount, counterparty FROM transactions WHERE kind = 'transfer' "
              "AND (amount <= 0 OR counterparty IS NULL) LIMIT 5")
    assert total == initial_sum + applied, \
        "sum(balance)=%d, expected %d + %d" % (total, initial_sum, applied)
    assert not negative, "negative balances: %r" % negative
    assert statuses <= FINAL_STATUSES, "unexpected statuses %r" % (statuses - FINAL_STATUSES)
    assert not bad_transfers, "transfer rows without a positive amount or a counterparty: %r" \
        % bad_transfers


def final_rows(path):
    """{txid: status} for every transaction recorded with a txid."""
    return dict(db_query(path, "SELECT txid, status FROM transactions WHERE txid IS NOT NULL"))


def wait_final(path, txids, timeout=60):
    """Waits until every txid in txids has a row with a final status; returns
    {txid: status} for all recorded txids."""
    want = set(txids)
    deadline = time.monotonic() + timeout
    while True:
        rows = final_rows(path)
        missing = [t for t in want if rows.get(t) not in FINAL_STATUSES]
        if not missing:
            return rows
        if time.monotonic() > deadline:
            pytest.fail("%d of %d accepted transactions not final after %ds (e.g. %r)"
                        % (len(missing), len(want), timeout, sorted(missing)[:10]))
        time.sleep(0.1)


def assert_recorded_once(db, accepted):
    """accepted: {txid: (card, amount)} of 202'd transactions, or (from,
    amount, to) for transfers. Each has exactly one final row with its own
    data, and no txid appears twice. Rows for ids whose 202 was lost with a
    dead connection may exist too."""
    rows = wait_final(db, accepted, timeout=60)
    dup = db_query(db, "SELECT txid, COUNT(*) FROM transactions WHERE txid IS NOT NULL "
                       "GROUP BY txid HAVING COUNT(*) > 1 LIMIT 10")
    assert not dup, "txids recorded more than once: %r" % dup
    recorded = {t: (c, a, to) for t, c, a, to in db_query(
        db, "SELECT txid, card_number, amount, counterparty FROM transactions "
            "WHERE txid IS NOT NULL")}
    recorded = {t: (v if accepted.get(t) is not None and len(accepted[t]) == 3 else v[:2])
                for t, v in recorded.items()}
    wrong = [t for t, v in accepted.items() if recorded.get(t) != tuple(v)]
    assert not wrong, [(t, accepted[t], recorded.get(t)) for t in wrong[:5]]
    return rows


def db_outcome_counts(path):
    """What the ledger says happened to deposits and withdrawals (transfers,
    account openings and keyed duplicates have counters of their own), in
    the terms of the metric counters."""
    amounts = ("txid IS NOT NULL AND COALESCE(kind, 'deposit') IN ('deposit', 'withdrawal') "
               "AND COALESCE(reason, '') <> 'idempotency_key_reused'")
    q = dict(db_query(path, """
        SELECT 'deposit', COUNT(*) FROM transactions WHERE {w} AND status = 'applied' AND amount > 0
        UNION ALL SELECT 'withdrawal', COUNT(*) FROM transactions WHERE {w} AND status = 'applied' AND amount < 0
        UNION ALL SELECT 'insufficient', COUNT(*) FROM transactions WHERE {w} AND status = 'insufficient_funds'
        UNION ALL SELECT 'unknown', COUNT(*) FROM transactions WHERE {w} AND status = 'unknown_account'
        UNION ALL SELECT 'rejected', COUNT(*) FROM transactions WHERE {w} AND status = 'rejected'
        UNION ALL SELECT 'delta', COALESCE(SUM(amount), 0) FROM transactions WHERE {w} AND status = 'applied'
    """.format(w=amounts)))
    return {
        "tx_applied_deposit": q["deposit"],
        "tx_applied_withdrawal": q["withdrawal"],
        "tx_insufficient_funds": q["insufficient"],
        "tx_unknown_account": q["unknown"],
        "tx_rejected": q["rejected"],
        "balance_delta": q["delta"],
    }


def assert_counters_match_db(fetch_counters, path, timeout=10):
    """Counters are published right after the commit; allow them a moment."""
    expected = db_outcome_counts(path)
    deadline = time.monotonic() + timeout
    while True:
        counters = fetch_counters()
        got = {k: counters.get(k) for k in expected}
        if got == expected or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert got == expected
    return counters


# --------------------------------------------------------------------------
# load


def make_ops(n, accounts, rng_seed=7, unknown_share=0.03, hot=50):
    """A reproducible mix: deposits, withdrawals (some large, on a few hot
    accounts, so that some overdraw) and transactions on unknown cards."""
    rng = random.Random(rng_seed)
    ops = []
    for _ in range(n):
        x = rng.random()
        if x < unknown_share:
            ops.append((unknown_card(rng.randrange(10000)), rng.randint(1, 10000)))
        elif x < 0.50:
            ops.append((card(rng.randrange(accounts)), rng.randint(1, 100000)))
        elif x < 0.80:
            ops.append((card(rng.randrange(accounts)), -rng.randint(1, 20000)))
        else:
            ops.append((card(rng.randrange(hot)), -rng.randint(500000, 3000000)))
    return ops


class Load:
    """Sends ops from several threads, each on its own keep-alive
    connection. A connection error (no response) means the request may or
    may not have been accepted: it is not counted, and the op is retried on a
    new connection. 503 is retried after a short pause."""

    def __init__(self, port, ops, threads=32, deadline_s=120, max_retries=200):
        self.port = port
        self.ops = ops
        self.n_threads = threads
        self.deadline = time.monotonic() + deadline_s
        self.max_retries = max_retries
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.accepted = {}                      # txid -> (card, amount)
        self.duplicate_ids = []
        self.statuses = collections.Counter()   # HTTP status -> count
        self.conn_errors = 0
        self.given_up = 0
        self.done = 0
        self.failures = []
        self._threads = []

    def start(self):
        for i in range(self.n_threads):
            t = threading.Thread(target=self._run, args=(self.ops[i::self.n_threads],), daemon=True)
            t.start()
            self._threads.append(t)
        return self

    def join(self, timeout=150):
        end = time.monotonic() + timeout
        for t in self._threads:
            t.join(max(0.0, end - time.monotonic()))
        alive = [t for t in self._threads if t.is_alive()]
        if alive:
            self.stop.set()
            pytest.fail("%d load threads still running after %ds" % (len(alive), timeout))
        assert not self.failures, self.failures[:5]
        return self

    def run(self, timeout=150):
        return self.start().join(timeout)

    def _connect(self):
        return http.client.HTTPConnection("127.0.0.1", self.port, timeout=HTTP_TIMEOUT)

    def _run(self, ops):
        box = [self._connect()]   # _send swaps in a new connection after an error
        try:
            for card_number, amount in ops:
                if not self._send(box, card_number, amount):
                    return
                with self.lock:
                    self.done += 1
        except Exception as e:  # surfaced by join()
            with self.lock:
                self.failures.append(repr(e))
        finally:
            box[0].close()

    def _send(self, conn_box, card_number, amount):
        """Returns False when the thread should stop."""
        body = json.dumps({"card_number": card_number, "amount": amount}).encode()
        headers = {"Content-Type": "application/json"}
        for _ in range(self.max_retries):
            if self.stop.is_set() or time.monotonic() > self.deadline:
                return False
            try:
                conn_box[0].request("POST", "/transaction", body, headers)
                resp = conn_box[0].getresponse()
                data = resp.read()
            except (OSError, http.client.HTTPException):
                with self.lock:
                    self.conn_errors += 1
                conn_box[0].close()
                conn_box[0] = self._connect()
                time.sleep(0.02)
                continue
            with self.lock:
                self.statuses[resp.status] += 1
            if resp.will_close:
                conn_box[0].close()
                conn_box[0] = self._connect()
            if resp.status == 503:
                time.sleep(0.01)
                continue
            if resp.status == 202:
                txid = int(json.loads(data)["id"])
                with self.lock:
                    if txid in self.accepted:
                        self.duplicate_ids.append(txid)
                    self.accepted[txid] = (card_number, amount)
            else:
                with self.lock:
                    self.failures.append("HTTP %d %r" % (resp.status, data[:200]))
            return True
        with self.lock:
            self.given_up += 1
        return True


class Traffic:
    """Sends any mix of JSON POSTs, ops = [(path, body, headers)], from
    several threads, each on its own keep-alive connection, and keeps every
    answer: results[i] = (HTTP status, parsed body, {header: value}) of
    ops[i]. 503 is
    retried after a short pause; a connection error is counted and the op
    sent again on a new connection (loopback tests expect none)."""

    def __init__(self, port, ops, threads=8, deadline_s=120, timeout=HTTP_TIMEOUT):
        self.port = port
        self.ops = ops
        self.n_threads = threads
        self.deadline = time.monotonic() + deadline_s
        self.timeout = timeout
        self.results = [None] * len(ops)
        self.lock = threading.Lock()
        self.retried_503 = 0
        self.conn_errors = 0
        self.failures = []
        self.done = 0
        self._threads = []

    def start(self):
        for k in range(self.n_threads):
            t = threading.Thread(target=self._run, args=(range(k, len(self.ops), self.n_threads),),
                                 daemon=True)
            t.start()
            self._threads.append(t)
        return self

    def join(self, timeout=150):
        end = time.monotonic() + timeout
        for t in self._threads:
            t.join(max(0.0, end - time.monotonic()))
        alive = sum(t.is_alive() for t in self._threads)
        assert not alive, "%d sender threads still running after %ds" % (alive, timeout)
        assert not self.failures, self.failures[:5]
        missing = sum(r is None for r in self.results)
        assert not missing, "%d requests never answered before the deadline" % missing
        return self

    def run(self, timeout=150):
        return self.start().join(timeout)

    def _connect(self):
        return http.client.HTTPConnection("127.0.0.1", self.port, timeout=self.timeout)

    def _run(self, indexes):
        conn = self._connect()
        try:
            for i in indexes:
                path, body, headers = self.ops[i]
                data = body if isinstance(body, (str, bytes)) else json.dumps(body)
                hdrs = {**JSON, **(headers or {})}
                while time.monotonic() < self.deadline:
                    try:
                        conn.request("POST", path, data, hdrs)
                        resp = conn.getresponse()
                        raw = resp.read()
                    except (OSError, http.client.HTTPException):
                        with self.lock:
                            self.conn_errors += 1
                        conn.close()
                        conn = self._connect()
                        time.sleep(0.02)
                        continue
                    if resp.will_close:
                        conn.close()
                        conn = self._connect()
                    if resp.status == 503:
                        with self.lock:
                            self.retried_503 += 1
                        time.sleep(0.01)
                        continue
                    self.results[i] = (resp.status, json.loads(raw) if raw else None,
                                       dict(resp.getheaders()))
                    break
                else:
                    return
                with self.lock:
                    self.done += 1
        except Exception as e:  # surfaced by join()
            with self.lock:
                self.failures.append(repr(e))
        finally:
            conn.close()


# --------------------------------------------------------------------------
# fixtures


@pytest.fixture(scope="session", autouse=True)
def _binaries():
    missing = [str(p) for p in (TXPROCD, TXCTL) if not os.access(p, os.X_OK)]
    if missing:
        pytest.fail("binaries not built: %s (run make)" % ", ".join(missing), pytrace=False)


@pytest.fixture(autouse=True)
def _every_server_log_scanned():
    """Every server a test started, however it ended (killed early, refused,
    cleaned up in a finally), has its log scanned for sanitizer reports."""
    first = len(_SERVERS)
    yield
    bad = []
    for s in _SERVERS[first:]:
        reports = s.sanitizer_reports()
        if reports:
            bad.append("%s:\n%s" % (s.log_path, "\n".join(reports[:20])))
    assert not bad, "sanitizer reports in server logs:\n" + "\n\n".join(bad)


BACKENDS = ("sqlite", "postgres")


def selected_backends():
    chosen = [b.strip() for b in os.environ.get("TXP_TEST_BACKENDS", ",".join(BACKENDS)).split(",")
              if b.strip()]
    unknown = set(chosen) - set(BACKENDS)
    if unknown:
        raise pytest.UsageError("TXP_TEST_BACKENDS: unknown backend(s) %s" % ", ".join(unknown))
    return chosen


def pytest_configure(config):
    config.addinivalue_line("markers", "sqlite_only: the test pokes at SQLite files; "
                                       "it runs on the SQLite backend only")
    config.addinivalue_line("markers", "backend_independent: the ledger backend plays no part; "
                                       "the test runs once, on SQLite")
    config.addinivalue_line("markers", "postgres_only: what only the PostgreSQL backend has; "
                                       "runs when TXP_TEST_BACKENDS has postgres")


def pytest_collection_modifyitems(config, items):
    """Without SQLite in TXP_TEST_BACKENDS, only what runs on PostgreSQL is
    kept: tests parametrized with backend=postgres and the postgres_only
    modules (the rest would repeat the SQLite half). Without PostgreSQL, the
    postgres_only ones go."""
    backends = selected_backends()
    keep, drop = [], []
    for item in items:
        callspec = getattr(item, "callspec", None)
        on_pg = callspec is not None and callspec.params.get("backend") == "postgres"
        pg_only = item.get_closest_marker("postgres_only") is not None
        if pg_only:
            wanted = "postgres" in backends
        elif "sqlite" not in backends:
            wanted = on_pg
        else:
            wanted = True
        (keep if wanted else drop).append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep


def pytest_generate_tests(metafunc):
    """The backend fixture's parameters: every selected backend, or SQLite
    alone for a test marked sqlite_only."""
    if "backend" not in metafunc.fixturenames:
        return
    backends = selected_backends()
    if (metafunc.definition.get_closest_marker("sqlite_only") or
            metafunc.definition.get_closest_marker("backend_independent")):
        backends = [b for b in backends if b == "sqlite"]
    if metafunc.definition.get_closest_marker("postgres_only"):
        backends = [b for b in backends if b == "postgres"]
    metafunc.parametrize("backend", backends, indirect=True, scope="module")


@pytest.fixture(scope="module")
def backend(request):
    """"sqlite" or "postgres": the ledger backend this run of the test uses."""
    return request.param


@pytest.fixture
def server_factory(tmp_path, backend):
    """make(**Server kwargs) -> started Server on this run's backend; every
    server is stopped (and checked for a clean exit) at teardown unless the
    test already did."""
    servers = []
    counter = itertools.count()

    def make(start=True, **kw):
        kw.setdefault("backend", backend)
        s = Server(tmp_path / ("srv%d" % next(counter)), **kw)
        servers.append(s)
        return s.start() if start else s

    yield make
    errors = []
    for s in servers:
        try:
            s.stop_and_check()
        except AssertionError as e:
            errors.append(str(e))
        finally:
            s.cleanup()
    assert not errors, "\n\n".join(errors)


@pytest.fixture
def server(server_factory):
    return server_factory()


@pytest.fixture(scope="module")
def shared_server(tmp_path_factory, backend):
    """One server for a module's tests that only add independent traffic."""
    s = Server(tmp_path_factory.mktemp("shared"), backend=backend)
    try:
        s.start()
        yield s
        s.stop_and_check()
    finally:
        s.cleanup()


# --------------------------------------------------------------------------
# reporting: show the server log of a failed test


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_setup(item):
    item._txp_started = time.monotonic()
    yield


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    if not rep.failed:
        return
    started = getattr(item, "_txp_started", 0)
    for s in list(_SERVERS):
        if s.proc is None:
            continue
        if s.alive() or (s.ended_at is not None and s.ended_at >= started):
            rep.sections.append(("txprocd log %s (port %s)" % (s.log_path.name, s.port),
                                 s.log_tail()))
