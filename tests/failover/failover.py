#!/usr/bin/python3
"""Failover run: the ledger on a PostgreSQL primary with a synchronous
standby, both managed by pg_auto_failover (Debian's pg-auto-failover-cli and
postgresql-15-auto-failover: a monitor and two data nodes, all on loopback
ports, in a work directory of this run); two txprocd nodes (--node-id 1 and
2) on the multi-host URI pg_auto_failover gives (target_session_attrs=
read-write), loaded through both, some requests waiting for their outcome
(Prefer: wait). Then kill -9 of the primary's pg_autoctl keeper and
postmaster, as if its machine were gone; the monitor promotes the standby;
the load goes on. Afterwards, from the ledger on the new primary: every 202
applied exactly once, every final answer (200/404/409/422 to a waiting
request) present with that outcome, money conserved, no negative balance;
the time from the kill to the first commit on the new primary is printed.

    tests/failover/failover.py [--seconds 40] [--build build] [--keep]

Exit status 0 when every check holds. Everything it starts is stopped and
its work directory removed at the end (kept with --keep or on failure)."""
import argparse
import collections
import http.client
import json
import os
import pwd
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from harness import ROOT, LoadThreads, card, exactly_once, free_port  # noqa: E402

ACCOUNTS = 1000
PG_BIN = "/usr/lib/postgresql/15/bin"
# The monitor's health checks, tightened from their defaults (5 s period,
# 20 s before a node is unhealthy, 30 s to wait for a demotion) so that a
# bounded run sees the whole failover; production keeps the defaults or
# tunes them to its network.
MONITOR_SETTINGS = {
    "pgautofailover.health_check_period": "1000",
    "pgautofailover.health_check_timeout": "1000",
    "pgautofailover.health_check_max_retries": "1",
    "pgautofailover.health_check_retry_delay": "500",
    "pgautofailover.node_considered_unhealthy_timeout": "3000",
    "pgautofailover.primary_demote_timeout": "5000",
}
FINAL_CODES = {200: None, 404: "unknown_account", 409: "insufficient_funds", 422: "rejected"}


def log(msg):
    print("failover: %s" % msg, flush=True)


class Cluster:
    """A pg_auto_failover formation: monitor + two data nodes. As root the
    PostgreSQL processes run as the user postgres (they refuse root)."""

    def __init__(self, work):
        self.dir = os.path.join(work, "paf")
        os.makedirs(self.dir)
        self.as_user = []
        if os.geteuid() == 0:
            pw = pwd.getpwnam("postgres")
            os.chown(self.dir, pw.pw_uid, pw.pw_gid)
            self.as_user = ["runuser", "-u", "postgres", "--"]
        os.chmod(self.dir, 0o700)
        self.env = ["env", "XDG_CONFIG_HOME=%s/config" % self.dir,
                    "XDG_DATA_HOME=%s/share" % self.dir, "PATH=%s:/usr/bin:/bin" % PG_BIN]
        self.ports = {"monitor": free_port(), "node1": free_port(), "node2": free_port()}
        self.procs = {}

    def cmd(self, *argv, check=True, timeout=120):
        r = subprocess.run([*self.as_user, *self.env, *argv], capture_output=True, text=True,
                           timeout=timeout)
        if check and r.returncode != 0:
            raise SystemExit("%s failed (%d): %s" % (" ".join(argv[:3]), r.returncode,
                                                     (r.stderr or r.stdout)[-800:]))
        return r.stdout

    def pgdata(self, name):
        return os.path.join(self.dir, name)

    def run(self, name):
        logf = open(os.path.join(self.dir, "%s.log" % name), "ab")
        self.procs[name] = subprocess.Popen([*self.as_user, *self.env, "pg_autoctl", "run",
                                             "--pgdata", self.pgdata(name)],
                                            stdout=logf, stderr=logf, start_new_session=True)

    def monitor_uri(self):
        return "postgres://autoctl_node@127.0.0.1:%d/pg_auto_failover?sslmode=disable" % \
            self.ports["monitor"]

    def psql(self, port, sql, db="postgres"):
        return self.cmd("psql", "-X", "-qAt", "-h", "127.0.0.1", "-p", str(port), "-d", db,
                        "-c", sql).strip()

    def start(self):
        self.cmd("pg_autoctl", "create", "monitor", "--pgdata", self.pgdata("monitor"),
                 "--pgport", str(self.ports["monitor"]), "--hostname", "127.0.0.1",
                 "--auth", "trust", "--no-ssl", "--pgctl", os.path.join(PG_BIN, "pg_ctl"))
        self.run("monitor")
        self.wait(lambda: self.psql(self.ports["monitor"], "SELECT 1", "pg_auto_failover") == "1",
                  60, "the monitor")
        for k, v in MONITOR_SETTINGS.items():
            self.psql(self.ports["monitor"], "ALTER SYSTEM SET %s = '%s'" % (k, v), "pg_auto_failover")
        self.psql(self.ports["monitor"], "SELECT pg_reload_conf()", "pg_auto_failover")
        for name in ("node1", "node2"):
            self.cmd("pg_autoctl", "create", "postgres", "--pgdata", self.pgdata(name),
                     "--pgport", str(self.ports[name]), "--hostname", "127.0.0.1", "--name", name,
                     "--auth", "trust", "--no-ssl", "--monitor", self.monitor_uri(),
                     "--dbname", "ledger", "--pgctl", os.path.join(PG_BIN, "pg_ctl"), timeout=180)
            self.run(name)
            want = {"node1": "single"} if name == "node1" else {"node1": "primary",
                                                                "node2": "secondary"}
            self.wait(lambda: all(self.states().get(n) == (st, st) for n, st in want.items()), 90,
                      ", ".join("%s %s" % kv for kv in want.items()))
        port = self.ports["node1"]
        self.psql(port, "CREATE ROLE txp LOGIN", "ledger")
        self.psql(port, "ALTER DATABASE ledger OWNER TO txp", "ledger")
        self.psql(port, "GRANT ALL ON SCHEMA public TO txp", "ledger")

    def states(self):
        """name -> (reported, assigned), from the monitor's own table."""
        out = self.psql(self.ports["monitor"], "SELECT nodename || '|' || reportedstate || '|' || "
                        "goalstate FROM pgautofailover.node", "pg_auto_failover")
        return {n: (r, g) for n, r, g in (line.split("|") for line in out.splitlines() if line)}

    def uri(self):
        return ("postgresql://txp@127.0.0.1:%d,127.0.0.1:%d/ledger?target_session_attrs=read-write"
                % (self.ports["node1"], self.ports["node2"]))

    def standby_names(self):
        return self.psql(self.ports["node1"], "SHOW synchronous_standby_names")

    @staticmethod
    def kill_group(proc):
        """SIGKILL to every process of proc's group: runuser and the
        pg_autoctl processes under it (killing runuser alone leaves them)."""
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait()

    def kill_primary_host(self):
        """kill -9 of node1's keeper and its postmaster: the machine is gone.
        The keeper first, or it would restart PostgreSQL in place."""
        self.kill_group(self.procs["node1"])
        pid_file = os.path.join(self.pgdata("node1"), "postmaster.pid")
        with open(pid_file) as f:
            os.kill(int(f.readline()), signal.SIGKILL)
        keepers = subprocess.run(["pgrep", "-f", "pg_autoctl.*%s" % self.pgdata("node1")],
                                 capture_output=True, text=True).stdout.split()
        if keepers:
            raise SystemExit("node1's keeper survived its kill: %r" % keepers)

    def stop(self):
        for p in self.procs.values():
            self.kill_group(p)   # whether or not runuser itself is still there
        for name in ("node1", "node2", "monitor"):
            pid_file = os.path.join(self.pgdata(name), "postmaster.pid")
            try:
                with open(pid_file) as f:
                    os.kill(int(f.readline()), signal.SIGKILL)
            except (OSError, ValueError):
                pass

    @staticmethod
    def wait(cond, timeout, what):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if cond():
                    return
            except (SystemExit, subprocess.SubprocessError):
                pass
            time.sleep(0.5)
        raise SystemExit("timed out after %d s waiting for %s" % (timeout, what))


class Node:
    def __init__(self, build, work, node, uri):
        self.node = node
        self.port = free_port()
        self.shm = "/txp-failover-%d-%d" % (os.getpid(), node)
        self.log_path = os.path.join(work, "txprocd-node%d.log" % node)
        self.proc = subprocess.Popen(
            [os.path.join(ROOT, build, "txprocd"), "--listen", "127.0.0.1:%d" % self.port,
             "--db", uri, "--shm-name", self.shm, "--node-id", str(node), "--queue-size", "262144"],
            stdout=open(self.log_path, "ab"), stderr=subprocess.STDOUT, start_new_session=True)

    def committed(self):
        """batches_committed, or None while the node does not answer."""
        try:
            c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=2)
            c.request("GET", "/metrics")
            return json.loads(c.getresponse().read())["counters"]["batches_committed"]
        except (OSError, ValueError, KeyError):
            return None

    def healthy(self):
        try:
            c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=1)
            c.request("GET", "/healthz")
            return c.getresponse().status == 200
        except OSError:
            return False

    def stop(self, sig=signal.SIGTERM):
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            return self.proc.wait(90)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            return "timeout"
        finally:
            try:
                os.unlink("/dev/shm" + self.shm)
            except OSError:
                pass


class Load(LoadThreads):
    """Threads over both nodes; one in four requests waits for its outcome."""

    def __init__(self, ports, threads, seed):
        super().__init__(threads, seed, join_timeout=60)
        self.ports = ports
        self.accepted = {}      # txid -> (card, amount)
        self.final = {}         # txid -> status a waiting client was told
        self.codes = collections.Counter()

    def run(self, seed):
        rng = random.Random(seed)
        conns = {}
        while not self.stop.is_set():
            port = rng.choice(self.ports)
            conn = conns.get(port) or http.client.HTTPConnection("127.0.0.1", port, timeout=15)
            conns[port] = conn
            key = (card(rng.randrange(ACCOUNTS + 5)), rng.choice([1, -1]) * rng.randint(1, 300000))
            wait = rng.random() < 0.25
            headers = {"Content-Type": "application/json"}
            if wait:
                headers["Prefer"] = "wait=10"
            body = json.dumps({"card_number": key[0], "amount": key[1]})
            try:
                conn.request("POST", "/transaction", body, headers)
                resp = conn.getresponse()
                data = json.loads(resp.read() or b"{}")
            except (OSError, http.client.HTTPException, ValueError):
                conn.close()
                conns.pop(port, None)
                with self.lock:
                    self.codes["no answer"] += 1
                time.sleep(0.05)
                continue
            with self.lock:
                self.codes[resp.status] += 1
                if "id" in data and resp.status in (200, 202, 404, 409, 422):
                    txid = int(data["id"])
                    self.accepted[txid] = key
                    if resp.status != 202:
                        self.final[txid] = data.get("status")
            if resp.status == 503:
                time.sleep(0.05)


def check(uri, initial, load):
    import psycopg2
    con = psycopg2.connect(uri)
    try:
        cur = con.cursor()
        cur.execute("SELECT txid, card_number, amount, status FROM transactions "
                    "WHERE txid IS NOT NULL")
        rows = cur.fetchall()
        cur.execute("SELECT SUM(balance), COUNT(*) FILTER (WHERE balance < 0) FROM users")
        total, negative = cur.fetchone()
    finally:
        con.close()
    problems, by_id = exactly_once(rows, load.accepted)
    told = [t for t, st in load.final.items() if t in by_id and by_id[t][0][2] != st]
    if told:
        problems.append("final answers the ledger does not hold: %r" %
                        [(t, load.final[t], by_id[t][0][2]) for t in told[:10]])
    extra = [t for t in by_id if t not in load.accepted]
    applied = sum(a for vs in by_id.values() for (_, a, st) in vs if st == "applied")
    if int(total) != initial + applied:
        problems.append("money not conserved: %d != %d + %d" % (total, initial, applied))
    if negative:
        problems.append("%d negative balances" % negative)
    return problems, by_id, extra


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=40)
    ap.add_argument("--build", default=os.environ.get("TXP_BUILD", "build"))
    ap.add_argument("--seed", type=int, default=int(time.time()))
    ap.add_argument("--threads", type=int, default=12)
    ap.add_argument("--keep", action="store_true")
    args = ap.parse_args()
    if shutil.which("pg_autoctl") is None:
        raise SystemExit("pg_autoctl is missing: apt-get install pg-auto-failover-cli "
                         "postgresql-15-auto-failover (make failover installs them)")
    work = tempfile.mkdtemp(prefix="txp-failover-")
    os.chmod(work, 0o755)
    cluster = Cluster(work)
    nodes = []
    ok = False
    try:
        t0 = time.monotonic()
        cluster.start()
        log("pg_auto_failover formation up in %.1f s: primary node1, synchronous standby node2 "
            "(synchronous_standby_names = %s)" % (time.monotonic() - t0, cluster.standby_names()))
        uri = cluster.uri()
        subprocess.run([os.path.join(ROOT, args.build, "txctl"), "seed", "--db", uri, "--accounts",
                        str(ACCOUNTS)], check=True, capture_output=True, timeout=120)
        import psycopg2
        con = psycopg2.connect(uri)
        cur = con.cursor()
        cur.execute("SELECT SUM(balance) FROM users")
        initial = int(cur.fetchone()[0])
        con.close()
        nodes = [Node(args.build, work, n, uri) for n in (1, 2)]
        Cluster.wait(lambda: all(n.healthy() for n in nodes), 30, "both txprocd nodes")
        load = Load([n.port for n in nodes], args.threads, args.seed)
        load.start()
        time.sleep(args.seconds / 4)
        killed = time.monotonic()
        cluster.kill_primary_host()
        log("kill -9 of the primary's keeper and postmaster at +%.1f s" % (args.seconds / 4))
        # Batches in flight when the primary died end one way or another
        # within a second; a commit counted after that is the new primary's.
        time.sleep(1.0)
        dead = [n.committed() for n in nodes]
        Cluster.wait(lambda: cluster.states().get("node2", ("", ""))[0] in ("wait_primary", "primary"),
                     120, "the monitor to promote node2")
        promoted = time.monotonic() - killed
        log("node2 promoted %.1f s after the kill" % promoted)
        Cluster.wait(lambda: any(c is not None and d is not None and c > d
                                 for c, d in zip((n.committed() for n in nodes), dead)),
                     60, "a commit on the new primary")
        first_commit = time.monotonic() - killed
        log("first commit on the new primary %.1f s after the kill" % first_commit)
        rest = args.seconds * 3 / 4 - promoted
        time.sleep(max(rest, 5))
        load.join()
        rcs = [n.stop() for n in nodes]
        problems, by_id, extra = check(uri, initial, load)
        if any(rc != 0 for rc in rcs):
            problems.append("txprocd exit codes after SIGTERM: %r" % rcs)
        print("answers              %s" % dict(sorted(load.codes.items(), key=str)))
        print("accepted             %d (%d of them final answers to waiting clients)"
              % (len(load.accepted), len(load.final)))
        print("recorded             %d (%d sent without an answer seen)" % (len(by_id), len(extra)))
        print("promotion            %.1f s after the kill" % promoted)
        print("first commit on the new primary  %.1f s after the kill" % first_commit)
        for p in problems:
            print("FAIL: " + p)
        ok = not problems
        print("failover: %s" % ("PASS" if ok else "FAIL"))
        return 0 if ok else 1
    finally:
        for n in nodes:
            if n.proc.poll() is None:
                n.stop(signal.SIGKILL)
        cluster.stop()
        if ok and not args.keep:
            shutil.rmtree(work, ignore_errors=True)
        else:
            print("work directory kept: %s" % work)


if __name__ == "__main__":
    sys.exit(main())
