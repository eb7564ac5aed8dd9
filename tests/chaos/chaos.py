#!/usr/bin/python3
"""Chaos run: while a load of valid and invalid requests runs, repeatedly
kill -9 random workers and frontends, SIGSTOP/SIGCONT workers, and once kill
the master and start a new one on the same segment; on PostgreSQL also
crash-restart the database server once (pg_ctl restart -m immediate). Then
check, from the ledger alone, that every transaction that got a 202 is
recorded exactly once, that money is conserved, that no balance is negative
and that no transaction is recorded that was never sent.

    tests/chaos/chaos.py --seconds 60 [--build build] [--seed 1] [--backend sqlite|postgres]
                         [--nodes N]

With --backend postgres the ledger is a throwaway PostgreSQL cluster
(tools/pg/pgtmp.sh) in the work directory, destroyed at the end. --nodes N
(PostgreSQL) runs N txprocd nodes (--node-id 1..N, ports and segments of
their own) on that one ledger, loads all of them, kills children on every
node and the master of one; some requests are also sent, with one
Idempotency-Key, through two nodes, and each key must be applied at most
once. Ids must be unique across the nodes.

Exit status 0 when every check holds; the figures are printed either way."""
import argparse
import collections
import http.client
import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from harness import ROOT, LoadThreads, card, exactly_once, free_port  # noqa: E402
ACCOUNTS = 2000
# Kills come as fast as the driver likes: children killed while serving must
# never make the server give up (only children that die before they are
# ready count toward its crash loop), so there is no budget to stay under.
FINAL = {"applied", "insufficient_funds", "unknown_account", "rejected",
         "duplicate"}   # the second copy of a keyed request (--nodes)


PGTMP = os.path.join(ROOT, "tools", "pg", "pgtmp.sh")


class Ledger:
    """Where the server keeps its ledger: a SQLite file or a database of a
    throwaway PostgreSQL cluster of this run's own."""

    def __init__(self, backend, workdir):
        self.backend = backend
        self.cluster = None
        if backend == "sqlite":
            self.db = os.path.join(workdir, "users.db")
            return
        os.chmod(workdir, 0o755)  # as root, the cluster runs as the postgres user
        self.cluster = os.path.join(workdir, "pg")
        out = subprocess.run(["sh", PGTMP, "start", self.cluster], check=True,
                             capture_output=True, text=True, timeout=300)
        self.db = out.stdout.strip().splitlines()[-1]

    def query(self, sql):
        if self.backend == "sqlite":
            con = sqlite3.connect("file:%s?mode=ro" % self.db, uri=True, timeout=30)
            try:
                return con.execute(sql).fetchall()
            finally:
                con.close()
        import psycopg2
        con = psycopg2.connect(self.db)
        try:
            with con.cursor() as cur:
                cur.execute(sql)
                return [tuple(int(v) if type(v).__name__ == "Decimal" else v for v in r)
                        for r in cur.fetchall()]
        finally:
            con.close()

    def crash_restart(self):
        subprocess.run(["sh", PGTMP, "restart", self.cluster, "--mode", "immediate"], check=True,
                       capture_output=True, timeout=300)

    def destroy(self):
        if self.cluster:
            subprocess.run(["sh", PGTMP, "destroy", self.cluster], capture_output=True, timeout=300)


class Server:
    """The txprocd under test; restartable on the same port, db and shm name."""

    def __init__(self, build, workdir, seed, ledger, node=0):
        self.bin = os.path.join(ROOT, build, "txprocd")
        self.txctl = os.path.join(ROOT, build, "txctl")
        self.ledger = ledger
        self.db = ledger.db
        self.node = node
        self.log_path = os.path.join(workdir, "txprocd%s.log" % (("-node%d" % node) if node else ""))
        self.log = open(self.log_path, "ab")
        self.port = free_port()
        self.shm = "/txp-chaos-%d-%d" % (os.getpid(), node)
        if node <= 1:
            subprocess.run([self.txctl, "seed", "--db", self.db, "--accounts", str(ACCOUNTS),
                            "--seed", str(seed)], check=True, capture_output=True)
        self.proc = None

    def start(self):
        self.proc = subprocess.Popen(
            [self.bin, "--listen", "127.0.0.1:%d" % self.port, "--db", self.db,
             "--shm-name", self.shm, "--workers", "2", "--frontends", "2",
             "--worker-timeout", "3", "--drain-timeout", "60"] +
            (["--node-id", str(self.node)] if self.node else []),
            stdout=self.log, stderr=self.log, start_new_session=True)
        return self.wait_healthy(20)

    def wait_healthy(self, timeout):
        t0 = time.monotonic()
        while time.monotonic() - t0 < timeout:
            if self.proc.poll() is not None:
                raise SystemExit("txprocd exited with %s during start" % self.proc.returncode)
            try:
                c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=1)
                c.request("GET", "/healthz")
                if c.getresponse().status == 200:
                    return time.monotonic() - t0
            except OSError:
                pass
            time.sleep(0.02)
        raise SystemExit("txprocd not healthy within %ds" % timeout)

    def children(self):
        r = subprocess.run([self.txctl, "--shm-name", self.shm, "children", "--json"],
                           capture_output=True, text=True, timeout=10)
        return json.loads(r.stdout)["children"] if r.returncode == 0 else []

    def stat(self, what):
        r = subprocess.run([self.txctl, "--shm-name", self.shm, what, "--json"],
                           capture_output=True, text=True, timeout=10)
        return json.loads(r.stdout) if r.returncode == 0 else {}


class Load(LoadThreads):
    """Threads on keep-alive connections; ~15% of requests are invalid on
    purpose and must get a 4xx. A request whose connection died without an
    answer has an unknown outcome: it is remembered so that the check can
    tell a transaction recorded for it from one that was never sent."""

    BAD = [
        ("POST", "/transaction", b'{"card_number": "6219 8619 0001 8640", "amount": 1.5}', 400),
        ("POST", "/transaction", b'{"card_number": 12, "amount": 5}', 400),
        ("POST", "/transaction", b'{"amount": 5}', 400),
        ("POST", "/transaction", b'not json', 400),
        ("POST", "/transaction", b'{"card_number": "6219 8619 0001 8640", "amount": 0}', 400),
        ("POST", "/nope", b'{}', 404),
        ("PUT", "/transaction", b'{}', 405),
    ]

    def __init__(self, ports, threads, seed):
        super().__init__(threads, seed)
        self.ports = ports
        self.accepted = {}
        self.keyed = collections.defaultdict(list)   # Idempotency-Key -> ids of its copies
        self.unknown = collections.Counter()   # (card, amount) sent without an answer
        self.status = collections.Counter()
        self.unexpected = []
        self.sent = 0

    def run(self, seed):
        rng = random.Random(seed)
        conns = {}
        pending_copy = None     # (port, body, idempotency key): the same request via another node
        n_keys = 0
        while not self.stop.is_set():
            headers = {"Content-Type": "application/json"}
            idem = None
            if pending_copy is not None:
                port, body, idem = pending_copy
                pending_copy = None
                key = tuple(json.loads(body).values())
                method, path, want = "POST", "/transaction", 202
            elif rng.random() < 0.15:
                port = rng.choice(self.ports)
                method, path, body, want = rng.choice(self.BAD)
                key = None
            else:
                port = rng.choice(self.ports)
                i = rng.randrange(ACCOUNTS + 20)       # a few unknown cards
                amount = rng.choice([1, -1]) * rng.randint(1, 200000)
                key = (card(i), amount)
                method, path, want = "POST", "/transaction", 202
                body = json.dumps({"card_number": key[0], "amount": amount}).encode()
                if len(self.ports) > 1 and rng.random() < 0.05:
                    n_keys += 1
                    idem = "chaos-%d-%d" % (seed, n_keys)
                    other = rng.choice([p for p in self.ports if p != port])
                    pending_copy = (other, body, idem)
            if idem is not None:
                headers["Idempotency-Key"] = idem
            conn = conns.get(port)
            if conn is None:
                conn = conns[port] = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            try:
                conn.request(method, path, body, headers)
                resp = conn.getresponse()
                data = resp.read()
            except (OSError, http.client.HTTPException):
                with self.lock:
                    self.sent += 1
                    self.status["no answer"] += 1
                    if key is not None:
                        self.unknown[key] += 1
                conn.close()
                conns.pop(port, None)
                time.sleep(0.01)
                continue
            with self.lock:
                self.sent += 1
                self.status[resp.status] += 1
                if resp.status == 202 and key is not None:
                    txid = int(json.loads(data)["id"])
                    # The second copy of a keyed request may be answered with the
                    # first one's id (an idempotent replay); any other repeat is a
                    # txid handed out twice.
                    replay = idem is not None and txid in self.keyed.get(idem, ())
                    if txid in self.accepted and not replay:
                        self.unexpected.append(("id handed out twice", txid, key, self.accepted[txid]))
                    self.accepted[txid] = key
                    if idem is not None:
                        self.keyed[idem].append(txid)
                elif resp.status == 503:
                    pass
                elif resp.status != want:
                    self.unexpected.append((method, path, body[:60], resp.status, data[:100]))
            if resp.will_close:
                conn.close()
                conns.pop(port, None)
        for conn in conns.values():
            conn.close()


class Chaos:
    """Kills on one server; several nodes get one Chaos each."""

    def __init__(self, server, rng):
        self.srv = server
        self.rng = rng
        self.counts = collections.Counter()
        self.recovery = []          # (what, seconds until serving/replaced again)
        self.stopped = {}           # pid -> time to SIGCONT
        self.pending = {}           # slot -> (killed pid, when, what) until replaced

    def watch_recoveries(self):
        """Resolves killed slots whose replacement now serves; one txctl
        call per loop, so waiting for a replacement never paces the kills."""
        if not self.pending:
            return
        now = time.monotonic()
        for c in self.srv.children():
            p = self.pending.get(c["slot"])
            if p and c["pid"] not in (0, p[0]) and c["state"] == "running":
                self.recovery.append((p[2], now - p[1]))
                del self.pending[c["slot"]]
        late = [slot for slot, p in self.pending.items() if now - p[1] > 20]
        if late:
            raise SystemExit("slots %r were not replaced within 20 s" % late)

    def kill_child(self, role):
        running = [c for c in self.srv.children() if c["role"] == role and c["state"] == "running"
                   and c["slot"] not in self.pending]
        if not running:
            return
        victim = self.rng.choice(running)
        try:
            os.kill(victim["pid"], signal.SIGKILL)
        except ProcessLookupError:
            return
        self.counts["kill -9 %s" % role] += 1
        self.pending[victim["slot"]] = (victim["pid"], time.monotonic(), "%s kill" % role)

    def stop_worker(self):
        running = [c for c in self.srv.children() if c["role"] == "worker" and c["state"] == "running"]
        if running:
            pid = self.rng.choice(running)["pid"]
            os.kill(pid, signal.SIGSTOP)
            self.stopped[pid] = time.monotonic() + self.rng.uniform(0.5, 5.0)
            self.counts["SIGSTOP worker"] += 1

    def cont_due(self, force=False):
        now = time.monotonic()
        for pid, at in list(self.stopped.items()):
            if force or now >= at:
                try:
                    os.kill(pid, signal.SIGCONT)
                except ProcessLookupError:
                    self.counts["stopped worker replaced"] += 1
                del self.stopped[pid]

    def kill_master(self):
        """kill -9 of the master and an immediate restart: its dying children
        still hold the port and the locks for a moment, which the new
        master must wait out by itself."""
        old = self.srv.proc
        os.kill(old.pid, signal.SIGKILL)
        old.wait()
        t0 = time.monotonic()
        self.pending.clear()
        self.srv.start()
        self.counts["kill -9 master"] += 1
        self.recovery.append(("master kill", time.monotonic() - t0))


def check_keys(ledger, load):
    """Each Idempotency-Key sent through two nodes moved money at most once,
    and every copy that got a 202 is recorded (as the request or as its
    duplicate)."""
    problems = []
    if not load.keyed:
        return problems
    rows = ledger.query("SELECT idempotency_key, status FROM transactions "
                        "WHERE idempotency_key LIKE 'chaos-%'")
    deciding = collections.Counter(k for k, st in rows if st not in ("duplicate", "rejected"))
    twice = [k for k, n in deciding.items() if n > 1]
    if twice:
        problems.append("Idempotency-Keys applied more than once: %r" % twice[:5])
    return problems


def check_ledger(ledger, initial, load):
    rows = ledger.query("SELECT txid, card_number, amount, status FROM transactions "
                        "WHERE txid IS NOT NULL")
    total = ledger.query("SELECT SUM(balance) FROM users")[0][0]
    negative = ledger.query("SELECT COUNT(*) FROM users WHERE balance < 0")[0][0]
    problems, by_id = exactly_once(rows, load.accepted)
    not_final = [t for t, v in by_id.items() if v[0][2] not in FINAL]
    if not_final:
        problems.append("rows without a final status: %r" % not_final[:10])
    unknown = collections.Counter(load.unknown)
    for t, v in by_id.items():
        if t in load.accepted:
            continue
        key = v[0][:2]
        if unknown[key] > 0:
            unknown[key] -= 1       # sent, but the 202 was lost with its connection
        else:
            problems.append("txid %d recorded but never sent: %r" % (t, v[0]))
            break
    applied = sum(a for vs in by_id.values() for (_, a, st) in vs if st == "applied")
    if total != initial + applied:
        problems.append("money not conserved: sum %d != %d + %d" % (total, initial, applied))
    if negative:
        problems.append("%d negative balances" % negative)
    return problems, len(rows)


def run_with_cleanup(servers, body):
    """Runs body(); whatever happens, no process of the servers under test
    outlives the run (a failed check must not leave a loaded server behind)."""
    try:
        return body()
    finally:
        for srv in servers:
            if srv.proc is not None and srv.proc.poll() is None:
                try:
                    os.killpg(srv.proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                srv.proc.wait()
            try:
                os.unlink("/dev/shm" + srv.shm)
            except OSError:
                pass


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=int, default=60)
    ap.add_argument("--build", default=os.environ.get("TXP_BUILD", "build"))
    ap.add_argument("--seed", type=int, default=int(time.time()))
    ap.add_argument("--threads", type=int, default=16)
    ap.add_argument("--backend", choices=("sqlite", "postgres"), default="sqlite")
    ap.add_argument("--nodes", type=int, default=0, help="txprocd nodes on one PostgreSQL ledger")
    args = ap.parse_args()
    if args.nodes and args.backend != "postgres":
        ap.error("--nodes needs --backend postgres")
    rng = random.Random(args.seed)
    work = tempfile.mkdtemp(prefix="txp-chaos-")
    ledger = Ledger(args.backend, work)
    rc = 1
    try:
        servers = [Server(args.build, work, args.seed, ledger, node)
                   for node in (range(1, args.nodes + 1) if args.nodes else [0])]
        initial = ledger.query("SELECT SUM(balance) FROM users")[0][0]
        print("chaos: %d s, seed %d, %s ledger%s, work dir %s"
              % (args.seconds, args.seed, args.backend,
                 ", %d nodes" % args.nodes if args.nodes else "", work), flush=True)
        rc = run_with_cleanup(servers, lambda: run(args, rng, work, servers, initial))
        return rc
    finally:
        # The cluster first: its directory is inside the work directory. A
        # failed run keeps the work directory (logs, ledger) for a look.
        ledger.destroy()
        if rc == 0:
            subprocess.run(["rm", "-rf", work])


def run(args, rng, work, servers, initial):
    for srv in servers:
        srv.start()
    load = Load([srv.port for srv in servers], args.threads, args.seed)
    chaos = [Chaos(srv, rng) for srv in servers]
    t_end = time.monotonic() + args.seconds
    master_kill_at = time.monotonic() + args.seconds / 2
    db_crash_at = time.monotonic() + args.seconds / 4 if args.backend == "postgres" else None
    load.start()
    try:
        while time.monotonic() < t_end:
            time.sleep(rng.uniform(0.05, 0.6) / len(servers))
            for c in chaos:
                c.cont_due()
                c.watch_recoveries()
            if db_crash_at and time.monotonic() >= db_crash_at:
                servers[0].ledger.crash_restart()
                chaos[0].counts["PostgreSQL restart -m immediate"] += 1
                db_crash_at = None
                continue
            c = rng.choice(chaos)
            if master_kill_at and time.monotonic() >= master_kill_at:
                c.cont_due(force=True)
                c.kill_master()
                master_kill_at = None
                continue
            action = rng.random()
            if action < 0.4:
                c.kill_child("worker")
            elif action < 0.75:
                c.kill_child("frontend")
            else:
                c.stop_worker()
        for c in chaos:
            c.cont_due(force=True)
    finally:
        load.join()
    requeued = sum(srv.stat("queue").get("requeued", 0) for srv in servers)
    t0 = time.monotonic()
    for srv in servers:
        srv.proc.send_signal(signal.SIGTERM)
    rcs = []
    for srv in servers:
        try:
            rcs.append(srv.proc.wait(90))
        except subprocess.TimeoutExpired:
            srv.proc.kill()
            rcs.append("timeout")
    drain_s = time.monotonic() - t0
    logs = [line for srv in servers for line in open(srv.log_path, errors="replace")]
    adopted = [line for line in logs if "adopted abandoned segment" in line]
    problems, recorded = check_ledger(servers[0].ledger, initial, load)
    problems += check_keys(servers[0].ledger, load)
    gave_up = [line for line in logs if "CRASH LOOP" in line or "can run; shutting down" in line]
    if gave_up:
        problems.append("the server gave up a role: %s" % gave_up[0].strip())
    if any(rc != 0 for rc in rcs):
        problems.append("final SIGTERM: exit %s" % rcs)
    if load.unexpected:
        problems.append("%d unexpected answers, e.g. %r" % (len(load.unexpected), load.unexpected[:3]))
    if len(servers) > 1:
        nodes = collections.Counter(t % 64 for t in load.accepted)
        if set(nodes) - {srv.node for srv in servers}:
            problems.append("ids numbered by no node: %r" % dict(nodes))

    counts = collections.Counter()
    recovery = []
    for c in chaos:
        counts.update(c.counts)
        recovery += c.recovery
    print("requests sent        %d" % load.sent)
    print("  answers            %s" % dict(sorted(load.status.items(), key=str)))
    print("accepted (202)       %d" % len(load.accepted))
    if len(servers) > 1:
        print("  by node            %s" % dict(sorted(collections.Counter(t % 64 for t in load.accepted).items())))
        print("  keyed copies       %d keys sent through two nodes" % len(load.keyed))
    print("recorded in ledger   %d" % recorded)
    print("kills survived       %s" % dict(counts))
    print("entries requeued     %s (from dead or stopped workers, since the master restart)" % requeued)
    print("master recovery      %s" % "; ".join(l.split("]", 1)[1].strip() for l in adopted))
    worst = {}
    for what, secs in recovery:
        worst[what] = max(secs, worst.get(what, 0.0))
    print("max recovery time    %s" % (", ".join("%s %.2f s" % kv for kv in sorted(worst.items()))
                                      or "n/a"))
    print("final drain          %.2f s, exit %s" % (drain_s, rcs))
    for p in problems:
        print("FAIL: " + p)
    print("chaos: %s" % ("PASS" if not problems else "FAIL"))
    return 0 if not problems else 1


if __name__ == "__main__":
    sys.exit(main())
