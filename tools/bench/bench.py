#!/usr/bin/env python3
"""make bench: txprocd against the ceilings of this machine, side by side.

Each measurement runs --reps times (3) on a fresh server (temp ledger seeded
with --accounts demo accounts, its own shm name, an ephemeral loopback port)
and the table shows the median and the min-max:

  ingest     wrk (post.lua: random valid transactions) against POST
             /transaction with a queue large enough to absorb the whole run:
             202s/s, latency p50/p99/p99.9, answers other than 202.
  http ceil  the same wrk run against nginx answering `return 202` (one
             worker, tools/bench/nginx.conf): the most any HTTP server does
             here.
  apply      committed transactions/s from the shared-memory counters while
             a backlog exists: the workers draining what the batch-ingest run
             queued (no HTTP load: the conditions of the storage ceiling);
             also the rate during the ingest run (sharing cores with HTTP).
  reference  tools/bench/http_floor: a bare server + cJSON, 2 processes,
             validate and answer 202, once on libevent's evhttp and once on
             txprocd's own HTTP layer (frontend/conn.c) -- what each layer
             costs, and what txprocd adds on top of its own.
  storage    tools/bench/sqlite_ceiling: one SQLite connection applying the
             same random transactions, batch = --batch-max, same schema and
             PRAGMAs; "naive" SELECT/UPDATE/INSERT (the ratio's denominator)
             and the worker's own statements.
  pg         one throwaway PostgreSQL (tools/pg/pgtmp.sh, default settings:
             fsync and synchronous_commit on) per repetition, destroyed after:
             pg ceil: tools/bench/pg_ceiling applies the same random
             transactions the naive way (BEGIN, SELECT ... FOR UPDATE, UPDATE,
             INSERT, COMMIT per transaction) over --pg-connections
             connections, as many as txprocd has workers; then txprocd on
             that server: the batch-ingest run and the drain of its backlog
             (apply, as above), the ingest run (the POST path never
             touches the database: it should match SQLite's), and two
             nodes (--node-id 1, 2) on one database, each loaded by its own
             wrk with half the connections (aggregate 202/s and commits/s
             against one node). Skipped, with the reason, when no cluster
             can be started.
  sustained  --sustained-seconds of the same load at the default
             configuration: committed/s at equilibrium (after the first third),
             share of 503s, p99 of all answers, memory per child, idle CPU.
  batch      wrk posting arrays of 100 to POST /transactions: transactions/s;
             the backlog it leaves is what the apply measurement drains.
  overload   the same arrays against the default configuration: the queue
             fills, the excess must get quick 503s and never time out.
  wait       --wait-connections (1,000) clients each POSTing /transaction with
             `Prefer: wait=5` against the default configuration: every request
             is held until its batch commits. The server's own
             commit-to-answer histogram (tools/bench/wait_hist, after the
             first second) gives p50/p99; wrk gives the latency the clients
             see and the answers/s.

Writes the table to stdout and everything to <out>/results.json.
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import benchlib as bl  # noqa: E402

PGTMP = bl.ROOT / "tools" / "pg" / "pgtmp.sh"

TARGETS = {
    "pg_apply_ratio": 5.0,      # apply on PostgreSQL / naive PostgreSQL ceiling
    "pg_ingest_ratio": 0.9,     # ingest on PostgreSQL / ingest on SQLite
    "ingest_ratio": 0.85,       # ingest / nginx
    "ingest_p99_ms": 5.0,
    "ingest_p99_over_nginx": 1.5,
    "apply_ratio": 0.8,         # apply / storage ceiling (naive)
    "sustained_ratio": 0.8,     # sustained committed/s / storage ceiling (naive)
    "sustained_p99_ms": 10.0,
    "rss_mib": 16.0,
    "anon_mib": 4.0,            # private memory (RssAnon) of a frontend at --connections
    "wait_p99_ms": 5.0,         # commit -> answer, 1,000 waiting clients
}


def run_ingest(a, server_args=(), db=None):
    srv = bl.Txprocd(a.build, a.accounts, ["--queue-size", a.ingest_queue, "--batch-max", a.batch_max,
                                           *server_args], db=db)
    try:
        srv.start()
        sampler = bl.Sampler(srv, interval=0.5)
        sampler.start()
        watch = bl.CpuWatch(p for _, p in srv.pids())
        t0 = time.monotonic()
        w = bl.wrk(srv.url, a.ingest_seconds, a.threads, a.connections, a.accounts)
        t1 = time.monotonic()
        other = watch.cores()
        time.sleep(0.3)
        samples = sampler.stop()
        end = [s for s in samples if s["t"] >= t1]
        q = end[0]["queue"] if end else samples[-1]["queue"]
        last = samples[-1]["counters"]
        srv.stop(kill=True)  # what is still queued is of no interest
        return {"wrk": w, "accepted_per_s": w["ok_per_s"],
                "non_202": w["errors"]["status"] + w["socket_errors"],
                "p50_ms": w["latency_us"]["p50"] / 1000, "p99_ms": w["latency_us"]["p99"] / 1000,
                "p999_ms": w["latency_us"]["p999"] / 1000, "backlog_at_end": q["depth"] + q["claimed"],
                "apply_during_ingest_per_s": bl.rate(samples, t0 + 1.0, t1),
                "server_accepted": last.get("tx_accepted"), "other_cpu_cores": other}
    finally:
        srv.cleanup()


def run_nginx(a):
    ng = bl.Nginx()
    try:
        ng.start()
        watch = bl.CpuWatch(bl.group_pids(ng.proc.pid))
        w = bl.wrk(ng.url, a.ingest_seconds, a.threads, a.connections, a.accounts)
        return {"wrk": w, "accepted_per_s": w["ok_per_s"], "p50_ms": w["latency_us"]["p50"] / 1000,
                "p99_ms": w["latency_us"]["p99"] / 1000, "p999_ms": w["latency_us"]["p999"] / 1000,
                "non_202": w["errors"]["status"] + w["socket_errors"], "other_cpu_cores": watch.cores()}
    finally:
        ng.cleanup()


def run_floor(a, layer="evhttp"):
    fl = bl.HttpFloor(a.build, procs=2, layer=layer)
    try:
        fl.start()
        watch = bl.CpuWatch(bl.group_pids(fl.proc.pid))
        w = bl.wrk(fl.url, a.ingest_seconds, a.threads, a.connections, a.accounts)
        return {"wrk": w, "accepted_per_s": w["ok_per_s"], "p99_ms": w["latency_us"]["p99"] / 1000,
                "non_202": w["errors"]["status"] + w["socket_errors"], "other_cpu_cores": watch.cores()}
    finally:
        fl.stop()


def run_sustained(a):
    srv = bl.Txprocd(a.build, a.accounts, [])
    try:
        srv.start()
        sampler = bl.Sampler(srv, interval=0.5)
        sampler.start()
        pids = srv.pids()
        watch = bl.CpuWatch(p for _, p in pids)
        t0 = time.monotonic()
        w = bl.wrk(srv.url, a.sustained_seconds, a.threads, a.connections, a.accounts)
        t1 = time.monotonic()
        other = watch.cores()
        mem = [dict(role=r, pid=p, **bl.proc_status(p)) for r, p in pids]
        samples = sampler.stop()
        eq = bl.rate(samples, t0 + a.sustained_seconds / 3.0, t1)
        c = samples[-1]["counters"]
        # Idle: the backlog applied, then nothing to do.
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and srv.txctl("queue")["depth"] > 0:
            time.sleep(0.2)
        time.sleep(0.5)
        idle = bl.idle_cpu(pids, a.idle_seconds)
        rc = srv.stop()
        total = w["requests"]
        return {"wrk": w, "committed_per_s": eq, "share_503": w["errors"]["status"] / total if total else None,
                "server_queue_full": c["tx_queue_full"], "server_accepted": c["tx_accepted"],
                "p50_ms": w["latency_us"]["p50"] / 1000, "p99_ms": w["latency_us"]["p99"] / 1000,
                "p999_ms": w["latency_us"]["p999"] / 1000, "timeouts": w["errors"]["timeout"],
                "socket_errors": w["socket_errors"], "memory_kib": mem, "idle_cpu": idle,
                "rss_max_mib": max(m.get("VmHWM", 0) for m in mem if m["role"] != "master") / 1024,
                "anon_max_mib": max(m.get("RssAnon", 0) for m in mem if m["role"] != "master") / 1024,
                "anon_frontend_max_mib": max(m.get("RssAnon", 0) for m in mem
                                             if m["role"] == "frontend") / 1024,
                "anon_worker_max_mib": max(m.get("RssAnon", 0) for m in mem
                                           if m["role"] == "worker") / 1024,
                "shmem_max_mib": max(m.get("RssShmem", 0) for m in mem if m["role"] != "master") / 1024,
                "master_idle_cpu_percent": next(i["cpu_percent"] for i in idle if i["role"] == "master"),
                "exit_code": rc, "other_cpu_cores": other}
    finally:
        srv.cleanup()


def run_overload(a):
    """Arrays of 100 against the default configuration: several times what
    the workers apply, so the queue fills and the excess must get quick
    503s, not timeouts."""
    srv = bl.Txprocd(a.build, a.accounts, [])
    try:
        srv.start()
        sampler = bl.Sampler(srv, interval=0.5)
        sampler.start()
        t0 = time.monotonic()
        w = bl.wrk(srv.url, a.overload_seconds, a.threads, a.connections, a.accounts, batch=100)
        t1 = time.monotonic()
        samples = sampler.stop()
        c = samples[-1]["counters"]
        srv.stop(kill=True)
        total = w["requests"]
        return {"wrk": w, "share_503": w["errors"]["status"] / total if total else None,
                "p99_ms": w["latency_us"]["p99"] / 1000, "p999_ms": w["latency_us"]["p999"] / 1000,
                "timeouts": w["errors"]["timeout"], "socket_errors": w["socket_errors"],
                "committed_per_s": bl.rate(samples, t0 + 1.0, t1),
                "server_queue_full": c["tx_queue_full"], "server_accepted": c["tx_accepted"]}
    finally:
        srv.cleanup()


def run_wait(a):
    """1,000 clients that each wait for the outcome (Prefer: wait): how long
    after the COMMIT a frontend answers, from the server's histogram of
    exactly that (metrics_record_wait). The first second (1,000 connections
    opening at once) is left out by subtracting a snapshot taken then."""
    srv = bl.Txprocd(a.build, a.accounts, [])
    try:
        srv.start()
        watch = bl.CpuWatch(p for _, p in srv.pids())
        box = {}

        def load():
            try:
                box["wrk"] = bl.wrk(srv.url, a.wait_seconds, a.threads, a.wait_connections, a.accounts,
                                    timeout_s=a.wait + 5, wait=a.wait)
            except Exception as e:  # reported below, after the server is read
                box["error"] = e
        t = threading.Thread(target=load, daemon=True)
        t.start()
        time.sleep(a.wait_warmup)
        h0, c0 = bl.wait_hist(a.build, srv.shm), srv.sample()["counters"]
        t.join(a.wait_seconds + a.wait + 70)
        other = watch.cores()
        time.sleep(0.3)  # answers to requests wrk abandoned at its end
        h1, c1 = bl.wait_hist(a.build, srv.shm), srv.sample()["counters"]
        try:
            with urllib.request.urlopen(srv.url + "/metrics", timeout=5) as r:
                wait_ms = json.load(r).get("wait_ms")
        except Exception:
            wait_ms = None
        srv.stop(kill=True)
        if "wrk" not in box:
            raise RuntimeError("wrk: %s" % box.get("error", "did not finish"))
        w = box["wrk"]
        h = bl.hist_delta(h1, h0)
        p50, p99, p999 = (bl.hist_quantile(h, q) for q in (0.50, 0.99, 0.999))
        d = lambda k: c1.get(k, 0) - c0.get(k, 0)  # noqa: E731
        # How many waiters one COMMIT releases at once.
        batches = d("batches_committed")
        per_commit = (bl.committed({"counters": c1}) - bl.committed({"counters": c0})) / batches if batches else None
        return {"wrk": w, "answers_per_s": w["rps"], "p50_ms": w["latency_us"]["p50"] / 1000,
                "p99_ms": w["latency_us"]["p99"] / 1000, "max_ms": w["latency_us"]["max"] / 1000,
                "status_4xx_5xx": w["errors"]["status"], "socket_errors": w["socket_errors"],
                "timeouts": w["errors"]["timeout"],
                "server_p50_ms": p50[0] / 1000 if p50 else None,
                "server_p99_ms": p99[0] / 1000 if p99 else None,
                "server_p99_bucket_ms": [p99[1] / 1000, (p99[2] + 1) / 1000] if p99 else None,
                "server_p999_ms": p999[0] / 1000 if p999 else None,
                "server_mean_ms": h["sum_us"] / h["count"] / 1000 if h["count"] else None,
                "server_samples": h["count"], "metrics_wait_ms": wait_ms,
                "waits_answered": d("waits_answered"), "waits_timed_out": d("waits_timed_out"),
                "waits_dropped": d("waits_dropped"), "mean_batch": per_commit,
                # None (n/a) when the server answered no wait at all.
                "not_answered_with_outcome": (d("waits_timed_out") + d("waits_dropped") + w["socket_errors"])
                if d("waits_answered") > 0 else None,
                "histogram": h, "other_cpu_cores": other}
    finally:
        srv.cleanup()


def run_batch(a, server_args=(), db=None):
    """Batch ingest, then the apply rate: arrays of 100 fill the queue far
    faster than any worker applies, so what they leave behind is a backlog
    the workers drain with no HTTP load -- the conditions of the storage
    ceiling."""
    srv = bl.Txprocd(a.build, a.accounts, ["--queue-size", a.batch_queue, "--batch-max", a.batch_max,
                                           *server_args], db=db)
    try:
        srv.start()
        w = bl.wrk(srv.url, a.batch_seconds, a.threads, a.connections, a.accounts, batch=100)
        workers = [p for r, p in srv.pids() if r == "worker"]
        ticks0 = sum(bl.cpu_ticks(p) or 0 for p in workers)
        samples = bl.sample_until_drained(srv, a.drain_seconds)
        ticks1 = sum(bl.cpu_ticks(p) or 0 for p in workers)
        busy = [s for s in samples if s["queue"]["depth"] > 0]
        drain = bl.rate(busy, busy[0]["t"], busy[-1]["t"]) if len(busy) >= 2 else None
        c = samples[-1]["counters"]
        batches = (c["batches_committed"] - busy[0]["counters"]["batches_committed"]) if busy else 0
        applied = (bl.committed(busy[-1]) - bl.committed(busy[0])) if busy else 0
        srv.stop(kill=True)  # the rest of the backlog is of no interest
        return {"wrk": w, "requests_per_s": w["ok_per_s"], "tx_per_s": w["ok_per_s"] * 100,
                "non_202": w["errors"]["status"] + w["socket_errors"],
                "p99_ms": w["latency_us"]["p99"] / 1000, "server_accepted": c["tx_accepted"],
                "backlog": busy[0]["queue"]["depth"] if busy else 0,
                "apply_drain_per_s": drain, "drain_window_s": busy[-1]["t"] - busy[0]["t"] if busy else 0,
                "mean_batch": applied / batches if batches else None,
                # CPU the workers spent per committed transaction while
                # draining: less sensitive to a busy machine than the rate.
                "worker_cpu_us_per_tx": ((ticks1 - ticks0) / os.sysconf("SC_CLK_TCK") * 1e6
                                         / (bl.committed(samples[-1]) - bl.committed(samples[0])))
                if samples and bl.committed(samples[-1]) > bl.committed(samples[0]) else None}
    finally:
        srv.cleanup()


def run_nodes(a, server_args, db):
    """Two txprocd nodes (--node-id 1 and 2) on one PostgreSQL database, each
    loaded by its own wrk with half the connections, at the same time: the
    aggregate 202/s and commits/s, to set against one node of the same run."""
    servers = [bl.Txprocd(a.build, a.accounts, ["--queue-size", a.ingest_queue, "--batch-max",
                                                a.batch_max, "--node-id", n, *server_args], db=db)
               for n in (1, 2)]
    try:
        for srv in servers:
            srv.start()
        samplers = [bl.Sampler(srv, interval=0.5) for srv in servers]
        for sm in samplers:
            sm.start()
        results = [None, None]

        def load(i):
            results[i] = bl.wrk(servers[i].url, a.ingest_seconds, 1, max(1, a.connections // 2),
                                a.accounts)

        t0 = time.monotonic()
        threads = [threading.Thread(target=load, args=(i,)) for i in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        t1 = time.monotonic()
        time.sleep(0.3)
        samples = [sm.stop() for sm in samplers]
        if None in results:
            raise RuntimeError("a wrk run failed")
        return {"accepted_per_s": sum(w["ok_per_s"] for w in results),
                "per_node_accepted_per_s": [w["ok_per_s"] for w in results],
                "committed_per_s": sum(bl.rate(sm, t0 + 1.0, t1) or 0 for sm in samples),
                "non_202": sum(w["errors"]["status"] + w["socket_errors"] for w in results),
                "p99_ms": max(w["latency_us"]["p99"] for w in results) / 1000}
    finally:
        for srv in servers:
            srv.stop(kill=True)
            srv.cleanup()


class PgUnavailable(RuntimeError):
    """No PostgreSQL cluster could be started; the stage is skipped."""


def run_pg(a):
    """One cluster of its own, destroyed afterwards: the naive ceiling, then
    txprocd's apply and ingest on fresh databases of the same server."""
    tmp = Path(tempfile.mkdtemp(prefix="txp-bench-pg-"))
    os.chmod(tmp, 0o755)  # as root, pgtmp.sh runs the server as another user
    cluster = tmp / "pg"
    try:
        st = subprocess.run(["sh", str(PGTMP), "start", str(cluster)], capture_output=True, text=True,
                            timeout=300)
        lines = st.stdout.strip().splitlines()
        if st.returncode != 0 or not lines:
            raise PgUnavailable((st.stderr.strip().splitlines() or ["pgtmp.sh start failed"])[-1])
        uri = lines[-1]
        out = subprocess.run([str(a.build / "pg_ceiling"), "--db", uri, "--seed-accounts", str(a.accounts),
                              "--connections", str(a.pg_connections), "--seconds", str(a.ceiling_seconds)],
                             capture_output=True, text=True, timeout=a.ceiling_seconds + 600)
        if out.returncode != 0:
            raise RuntimeError("pg_ceiling: " + out.stderr.strip())
        result = {"ceiling": json.loads(out.stdout)}

        def fresh(name):
            subprocess.run(["sh", str(PGTMP), "psql", str(cluster), "-qc",
                            "CREATE DATABASE %s OWNER txp" % name], check=True, capture_output=True,
                           timeout=60)
            db = uri.rsplit("/", 1)[0] + "/" + name
            bl.seed(a.build, db, a.accounts)
            return db

        def psql(sql, timeout=120):
            return subprocess.run(["sh", str(PGTMP), "psql", str(cluster), "-U", "postgres", "-qAtc",
                                   sql], check=True, capture_output=True, text=True,
                                  timeout=timeout).stdout.strip()

        def settle(dropped):
            """Leaves the server as a fresh one would be: the database the last
            run filled is dropped (autovacuum would work on it during the next
            run), the WAL it wrote checkpointed, and autovacuum idle."""
            psql("DROP DATABASE %s WITH (FORCE)" % dropped)
            psql("CHECKPOINT")
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and psql(
                    "SELECT COUNT(*) FROM pg_stat_activity WHERE backend_type = 'autovacuum worker'"
                    " AND state IS DISTINCT FROM 'idle'") != "0":
                time.sleep(0.5)

        workers = ["--workers", a.pg_connections]
        result["batch"] = run_batch(a, workers, db=fresh("apply"))
        settle("apply")
        result["ingest"] = run_ingest(a, workers, db=fresh("ingest"))
        settle("ingest")
        result["nodes"] = run_nodes(a, workers, db=fresh("nodes"))
        return result
    finally:
        d = subprocess.run(["sh", str(PGTMP), "destroy", str(cluster)], capture_output=True, text=True,
                           timeout=300)
        if d.returncode != 0 and cluster.exists():
            bl.log("pgtmp.sh destroy %s failed: %s" % (cluster, d.stderr.strip()))
        else:
            shutil.rmtree(tmp, ignore_errors=True)


def fmt(v, unit=""):
    if v is None:
        return "n/a"
    if unit == "%":
        return "%.1f%%" % (100 * v)
    if isinstance(v, float) and abs(v) < 100 and v != int(v):
        return "%.2f" % v
    return "{:,.0f}".format(v)


def row(name, values, unit=""):
    s = bl.spread(values)
    rng = "%s – %s" % (fmt(s["min"], unit), fmt(s["max"], unit)) if s["median"] is not None else ""
    return "  %-44s %14s   %s" % (name, fmt(s["median"], unit), rng)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--build", default="build")
    p.add_argument("--out", default="bench")
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--accounts", type=int, default=10000)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--connections", type=int, default=64)
    p.add_argument("--batch-max", type=int, default=1024, help="server --batch-max and ceiling batch")
    p.add_argument("--ingest-seconds", type=int, default=10)
    p.add_argument("--ingest-queue", type=int, default=2097152)
    p.add_argument("--drain-seconds", type=float, default=8, help="longest apply measurement")
    p.add_argument("--sustained-seconds", type=int, default=30)
    p.add_argument("--idle-seconds", type=float, default=3)
    p.add_argument("--ceiling-seconds", type=float, default=5)
    p.add_argument("--pg-connections", type=int, default=2,
                   help="connections of the PostgreSQL ceiling, and txprocd's workers on PostgreSQL")
    p.add_argument("--batch-seconds", type=int, default=2)
    p.add_argument("--batch-queue", type=int, default=4194304)
    p.add_argument("--overload-seconds", type=int, default=5)
    p.add_argument("--wait-connections", type=int, default=1000)
    p.add_argument("--wait-seconds", type=int, default=8)
    p.add_argument("--wait", type=int, default=5, help="N of Prefer: wait=N in the wait measurement")
    p.add_argument("--wait-warmup", type=float, default=1.0,
                   help="seconds of the wait run left out of the server histogram")
    p.add_argument("--only", default="ingest,nginx,floor,conn_floor,ceiling,pg,sustained,batch,"
                   "overload,wait",
                   help="comma-separated subset of the measurements")
    a = p.parse_args()
    a.build = (bl.ROOT / a.build) if not Path(a.build).is_absolute() else Path(a.build)
    only = set(a.only.split(","))
    out = Path(a.out) if Path(a.out).is_absolute() else bl.ROOT / a.out
    out.mkdir(parents=True, exist_ok=True)
    if "wait" in only:
        # wrk and each frontend hold one descriptor per connection.
        nofile = bl.raise_nofile(2 * a.wait_connections + 1024)
        if nofile < a.wait_connections + 256:
            sys.exit("bench: open-file limit %d is too low for %d connections (ulimit -n)"
                     % (nofile, a.wait_connections))

    started = time.time()
    meta = {"date": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "commit": bl.git_commit(),
            "machine": bl.machine(), "versions": bl.versions(), "loadavg_start": bl.loadavg(),
            "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(a).items()}}
    runs = {k: [] for k in ("ingest", "nginx", "floor", "conn_floor", "ceiling_naive", "ceiling_worker", "pg_ceiling",
                            "pg_batch", "pg_ingest", "pg_nodes", "sustained", "batch", "overload", "wait")}
    pg_skipped = None
    try:
        for rep in range(a.reps):
            # Interleaved, so that a burst of noise from elsewhere on the
            # machine lands on one repetition of each, not on all of one.
            if "ingest" in only:
                bl.log("rep %d/%d: ingest" % (rep + 1, a.reps))
                runs["ingest"].append(run_ingest(a))
            if "nginx" in only:
                bl.log("rep %d/%d: nginx ceiling" % (rep + 1, a.reps))
                runs["nginx"].append(run_nginx(a))
            if "floor" in only:
                bl.log("rep %d/%d: bare evhttp server" % (rep + 1, a.reps))
                runs["floor"].append(run_floor(a))
            if "conn_floor" in only:
                bl.log("rep %d/%d: bare server on txprocd's HTTP layer" % (rep + 1, a.reps))
                runs["conn_floor"].append(run_floor(a, layer="conn"))
            if "ceiling" in only:
                bl.log("rep %d/%d: storage ceiling" % (rep + 1, a.reps))
                runs["ceiling_naive"].append(bl.ceiling(a.build, "naive", a.batch_max, a.ceiling_seconds, a.accounts))
                runs["ceiling_worker"].append(bl.ceiling(a.build, "worker", a.batch_max, a.ceiling_seconds, a.accounts))
            if "pg" in only and pg_skipped is None:
                bl.log("rep %d/%d: PostgreSQL ceiling, apply and ingest" % (rep + 1, a.reps))
                try:
                    r = run_pg(a)
                    runs["pg_ceiling"].append(r["ceiling"])
                    runs["pg_batch"].append(r["batch"])
                    runs["pg_ingest"].append(r["ingest"])
                    runs["pg_nodes"].append(r["nodes"])
                except PgUnavailable as e:
                    pg_skipped = str(e)
                    bl.log("PostgreSQL ceiling skipped: " + pg_skipped)
            if "sustained" in only:
                bl.log("rep %d/%d: sustained" % (rep + 1, a.reps))
                runs["sustained"].append(run_sustained(a))
            if "batch" in only:
                bl.log("rep %d/%d: batch ingest" % (rep + 1, a.reps))
                runs["batch"].append(run_batch(a))
            if "overload" in only:
                bl.log("rep %d/%d: overload" % (rep + 1, a.reps))
                runs["overload"].append(run_overload(a))
            if "wait" in only:
                bl.log("rep %d/%d: %d waiting clients" % (rep + 1, a.reps, a.wait_connections))
                runs["wait"].append(run_wait(a))
    finally:
        bl.stop_all()
    meta["loadavg_end"] = bl.loadavg()
    meta["pg_ceiling_skipped"] = pg_skipped
    meta["elapsed_s"] = round(time.time() - started, 1)

    def col(name, key):
        return [r.get(key) for r in runs[name]]

    summary = {
        "ingest_per_s": bl.spread(col("ingest", "accepted_per_s")),
        "ingest_p50_ms": bl.spread(col("ingest", "p50_ms")),
        "ingest_p99_ms": bl.spread(col("ingest", "p99_ms")),
        "ingest_p999_ms": bl.spread(col("ingest", "p999_ms")),
        "ingest_non_202": bl.spread(col("ingest", "non_202")),
        "nginx_per_s": bl.spread(col("nginx", "accepted_per_s")),
        "nginx_p99_ms": bl.spread(col("nginx", "p99_ms")),
        "floor_per_s": bl.spread(col("floor", "accepted_per_s")),
        "conn_floor_per_s": bl.spread(col("conn_floor", "accepted_per_s")),
        "conn_floor_p99_ms": bl.spread(col("conn_floor", "p99_ms")),
        "apply_drain_per_s": bl.spread(col("batch", "apply_drain_per_s")),
        "apply_mean_batch": bl.spread(col("batch", "mean_batch")),
        "apply_during_ingest_per_s": bl.spread(col("ingest", "apply_during_ingest_per_s")),
        "backlog_at_end": bl.spread(col("ingest", "backlog_at_end")),
        "ceiling_naive_per_s": bl.spread([r["per_second"] for r in runs["ceiling_naive"]]),
        "ceiling_worker_per_s": bl.spread([r["per_second"] for r in runs["ceiling_worker"]]),
        "pg_ceiling_per_s": bl.spread([r["applied_per_s"] for r in runs["pg_ceiling"]]),
        "pg_apply_drain_per_s": bl.spread(col("pg_batch", "apply_drain_per_s")),
        "pg_apply_mean_batch": bl.spread(col("pg_batch", "mean_batch")),
        "pg_ingest_per_s": bl.spread(col("pg_ingest", "accepted_per_s")),
        "pg_two_nodes_ingest_per_s": bl.spread(col("pg_nodes", "accepted_per_s")),
        "pg_two_nodes_committed_per_s": bl.spread(col("pg_nodes", "committed_per_s")),
        "sustained_committed_per_s": bl.spread(col("sustained", "committed_per_s")),
        "sustained_share_503": bl.spread(col("sustained", "share_503")),
        "sustained_p99_ms": bl.spread(col("sustained", "p99_ms")),
        "sustained_timeouts": bl.spread(col("sustained", "timeouts")),
        "rss_max_mib": bl.spread(col("sustained", "rss_max_mib")),
        "anon_max_mib": bl.spread(col("sustained", "anon_max_mib")),
        "anon_frontend_max_mib": bl.spread(col("sustained", "anon_frontend_max_mib")),
        "master_idle_cpu_percent": bl.spread(col("sustained", "master_idle_cpu_percent")),
        "batch_tx_per_s": bl.spread(col("batch", "tx_per_s")),
        "batch_p99_ms": bl.spread(col("batch", "p99_ms")),
        "overload_share_503": bl.spread(col("overload", "share_503")),
        "overload_p99_ms": bl.spread(col("overload", "p99_ms")),
        "overload_timeouts": bl.spread(col("overload", "socket_errors")),
        "overload_committed_per_s": bl.spread(col("overload", "committed_per_s")),
        "wait_server_p50_ms": bl.spread(col("wait", "server_p50_ms")),
        "wait_server_p99_ms": bl.spread(col("wait", "server_p99_ms")),
        "wait_p99_ms": bl.spread(col("wait", "p99_ms")),
        "wait_answers_per_s": bl.spread(col("wait", "answers_per_s")),
        "wait_not_answered": bl.spread(col("wait", "not_answered_with_outcome")),
    }

    def ratio(n, d):
        n, d = summary[n]["median"], summary[d]["median"]
        return n / d if n is not None and d else None

    ratios = {
        "ingest_over_http_ceiling": ratio("ingest_per_s", "nginx_per_s"),
        "ingest_over_bare_evhttp": ratio("ingest_per_s", "floor_per_s"),
        "bare_evhttp_over_http_ceiling": ratio("floor_per_s", "nginx_per_s"),
        "ingest_over_bare_conn": ratio("ingest_per_s", "conn_floor_per_s"),
        "bare_conn_over_http_ceiling": ratio("conn_floor_per_s", "nginx_per_s"),
        "ingest_p99_over_nginx_p99": ratio("ingest_p99_ms", "nginx_p99_ms"),
        "apply_over_storage_ceiling": ratio("apply_drain_per_s", "ceiling_naive_per_s"),
        "apply_during_ingest_over_storage_ceiling": ratio("apply_during_ingest_per_s", "ceiling_naive_per_s"),
        "apply_over_worker_statements_ceiling": ratio("apply_drain_per_s", "ceiling_worker_per_s"),
        "sustained_over_storage_ceiling": ratio("sustained_committed_per_s", "ceiling_naive_per_s"),
        "pg_apply_over_pg_ceiling": ratio("pg_apply_drain_per_s", "pg_ceiling_per_s"),
        "pg_ingest_over_sqlite_ingest": ratio("pg_ingest_per_s", "ingest_per_s"),
        "pg_two_nodes_over_one_node_ingest": ratio("pg_two_nodes_ingest_per_s", "pg_ingest_per_s"),
    }
    S = lambda k: summary[k]["median"]  # noqa: E731
    checks = [
        ("ingest >= %.2f x nginx" % TARGETS["ingest_ratio"], ratios["ingest_over_http_ceiling"],
         lambda v: v >= TARGETS["ingest_ratio"]),
        ("ingest p99 <= %.0f ms" % TARGETS["ingest_p99_ms"], S("ingest_p99_ms"),
         lambda v: v <= TARGETS["ingest_p99_ms"]),
        ("ingest p99 <= %.1f x nginx p99" % TARGETS["ingest_p99_over_nginx"],
         ratios["ingest_p99_over_nginx_p99"], lambda v: v <= TARGETS["ingest_p99_over_nginx"]),
        ("ingest: no answer other than 202", S("ingest_non_202"), lambda v: v == 0),
        ("apply >= %.1f x storage ceiling" % TARGETS["apply_ratio"], ratios["apply_over_storage_ceiling"],
         lambda v: v >= TARGETS["apply_ratio"]),
        ("sustained >= %.1f x storage ceiling" % TARGETS["sustained_ratio"],
         ratios["sustained_over_storage_ceiling"], lambda v: v >= TARGETS["sustained_ratio"]),
        ("sustained p99 <= %.0f ms" % TARGETS["sustained_p99_ms"], S("sustained_p99_ms"),
         lambda v: v <= TARGETS["sustained_p99_ms"]),
        ("sustained: no timeouts", S("sustained_timeouts"), lambda v: v == 0),
        ("overload: 503s, no timeouts/socket errors", S("overload_timeouts"), lambda v: v == 0),
        ("RSS per child <= %.0f MiB" % TARGETS["rss_mib"], S("rss_max_mib"), lambda v: v <= TARGETS["rss_mib"]),
        ("private memory per frontend <= %.0f MiB" % TARGETS["anon_mib"],
         S("anon_frontend_max_mib"), lambda v: v <= TARGETS["anon_mib"]),
        ("master idle CPU ~ 0 (< 0.5%)", S("master_idle_cpu_percent"), lambda v: v < 0.5),
        ("wait: commit->answer p99 <= %.0f ms" % TARGETS["wait_p99_ms"], S("wait_server_p99_ms"),
         lambda v: v <= TARGETS["wait_p99_ms"]),
        ("wait: all answered with the outcome", S("wait_not_answered"), lambda v: v == 0),
        ("apply on PostgreSQL >= %.0f x naive PostgreSQL" % TARGETS["pg_apply_ratio"],
         ratios["pg_apply_over_pg_ceiling"], lambda v: v >= TARGETS["pg_apply_ratio"]),
        ("ingest on PostgreSQL >= %.1f x ingest on SQLite" % TARGETS["pg_ingest_ratio"],
         ratios["pg_ingest_over_sqlite_ingest"], lambda v: v >= TARGETS["pg_ingest_ratio"]),
    ]
    verdicts = [{"target": n, "value": v, "holds": None if v is None else bool(f(v))}
                for n, v, f in checks]

    result = {"meta": meta, "summary": summary, "ratios": ratios, "targets": verdicts, "runs": runs}
    (out / "results.json").write_text(json.dumps(result, indent=2, default=str) + "\n")

    m = meta["machine"]
    print()
    print("txprocd make bench — %s, commit %s" % (meta["date"], meta["commit"]))
    print("machine: %s cores, %s, %s GiB, Linux %s; load average at start %s, at end %s" % (
        m["cores"], m["cpu"], m.get("mem_gib"), m["kernel"], meta["loadavg_start"], meta["loadavg_end"]))
    print("load: wrk -t%d -c%d, %d accounts, batch-max %d; medians of %d runs (min – max); %s, %s, SQLite %s" % (
        a.threads, a.connections, a.accounts, a.batch_max, a.reps, meta["versions"]["wrk"].split(" [")[0],
        meta["versions"]["nginx"].replace("nginx version: ", ""), meta["versions"]["sqlite"]))
    print()
    print("  %-44s %14s   %s" % ("", "median", "min – max"))
    print("ingest: POST /transaction, %d s, queue %d" % (a.ingest_seconds, a.ingest_queue))
    print(row("202 responses/s", col("ingest", "accepted_per_s")))
    print(row("latency p50 ms", col("ingest", "p50_ms")))
    print(row("latency p99 ms", col("ingest", "p99_ms")))
    print(row("latency p99.9 ms", col("ingest", "p999_ms")))
    print(row("answers other than 202 (incl. socket errors)", col("ingest", "non_202")))
    print(row("committed/s during the run (shm counters)", col("ingest", "apply_during_ingest_per_s")))
    print(row("backlog when the run ended", col("ingest", "backlog_at_end")))
    print(row("CPU of other processes on the machine, cores", col("ingest", "other_cpu_cores")))
    print("HTTP ceiling: nginx return 202, 1 worker, same wrk script")
    print(row("responses/s", col("nginx", "accepted_per_s")))
    print(row("latency p99 ms", col("nginx", "p99_ms")))
    print(row("CPU of other processes on the machine, cores", col("nginx", "other_cpu_cores")))
    print("reference: bare libevent evhttp + cJSON, validate and answer 202, 2 processes, no queue")
    print(row("responses/s", col("floor", "accepted_per_s")))
    print(row("CPU of other processes on the machine, cores", col("floor", "other_cpu_cores")))
    print("reference: the same on txprocd's own HTTP layer (frontend/conn.c), 2 processes, no queue")
    print(row("responses/s", col("conn_floor", "accepted_per_s")))
    print(row("latency p99 ms", col("conn_floor", "p99_ms")))
    print(row("CPU of other processes on the machine, cores", col("conn_floor", "other_cpu_cores")))
    print("apply: committed/s while a backlog exists (shm counters), workers draining the")
    print("       backlog left by the batch-ingest run below, no HTTP load, batch-max %d" % a.batch_max)
    print(row("committed/s", col("batch", "apply_drain_per_s")))
    print(row("backlog when the drain started", col("batch", "backlog")))
    print(row("mean entries per SQLite transaction", col("batch", "mean_batch")))
    print("storage ceiling: tools/bench/sqlite_ceiling, batch %d, %g s" % (a.batch_max, a.ceiling_seconds))
    print(row("naive SELECT/UPDATE/INSERT tx/s", [r["per_second"] for r in runs["ceiling_naive"]]))
    print(row("worker's statements tx/s", [r["per_second"] for r in runs["ceiling_worker"]]))
    print("PostgreSQL ceiling: tools/bench/pg_ceiling, one COMMIT per transaction, %d connections, %g s" % (
        a.pg_connections, a.ceiling_seconds))
    if pg_skipped:
        print("  skipped: " + pg_skipped)
    print(row("naive SELECT FOR UPDATE/UPDATE/INSERT tx/s", [r["applied_per_s"] for r in runs["pg_ceiling"]]))
    if runs["pg_ceiling"]:
        r = runs["pg_ceiling"][0]
        print("  PostgreSQL %s, synchronous_commit=%s, fsync=%s, shared_buffers=%s" % (
            r["server_version"].split()[0], r["synchronous_commit"], r["fsync"], r["shared_buffers"]))
    print("txprocd on that PostgreSQL, %d workers: apply (drain of the batch-ingest backlog), ingest" %
          a.pg_connections)
    print(row("committed/s", col("pg_batch", "apply_drain_per_s")))
    print(row("mean entries per PostgreSQL transaction", col("pg_batch", "mean_batch")))
    print(row("ingest 202 responses/s", col("pg_ingest", "accepted_per_s")))
    print(row("ingest latency p99 ms", col("pg_ingest", "p99_ms")))
    print("two txprocd nodes (--node-id 1, 2) on that PostgreSQL, one wrk each (half the connections)")
    print(row("ingest 202 responses/s, both nodes", col("pg_nodes", "accepted_per_s")))
    print(row("committed/s during the run, both nodes", col("pg_nodes", "committed_per_s")))
    print(row("answers other than 202 (incl. socket errors)", col("pg_nodes", "non_202")))
    print(row("latency p99 ms (worse node)", col("pg_nodes", "p99_ms")))
    print("sustained: default config (queue 65536, batch-max 1024, 2 frontends, 2 workers), %d s" % a.sustained_seconds)
    print(row("committed/s at equilibrium", col("sustained", "committed_per_s")))
    print(row("share of 503", col("sustained", "share_503"), "%"))
    print(row("latency p50 ms (all answers)", col("sustained", "p50_ms")))
    print(row("latency p99 ms (all answers)", col("sustained", "p99_ms")))
    print(row("timeouts + socket errors", col("sustained", "socket_errors")))
    print(row("max resident memory of a child MiB (VmHWM)", col("sustained", "rss_max_mib")))
    print(row("  of it shared queue pages, MiB (RssShmem)", col("sustained", "shmem_max_mib")))
    print(row("  private memory of a frontend, MiB (RssAnon)", col("sustained", "anon_frontend_max_mib")))
    print(row("  private memory of a worker, MiB (RssAnon: SQLite's cache)",
              col("sustained", "anon_worker_max_mib")))
    print(row("master CPU when idle, % of a core", col("sustained", "master_idle_cpu_percent")))
    print(row("CPU of other processes on the machine, cores", col("sustained", "other_cpu_cores")))
    print("batch ingest: POST /transactions, arrays of 100, %d s" % a.batch_seconds)
    print(row("transactions/s accepted", col("batch", "tx_per_s")))
    print(row("answers other than 202", col("batch", "non_202")))
    print(row("latency p99 ms (per request of 100)", col("batch", "p99_ms")))
    print("overload: arrays of 100 against the default config (queue 65536), %d s" % a.overload_seconds)
    print(row("share of 503 (Retry-After: 1)", col("overload", "share_503"), "%"))
    print(row("latency p99 ms (all answers)", col("overload", "p99_ms")))
    print(row("latency p99.9 ms (all answers)", col("overload", "p999_ms")))
    print(row("timeouts + socket errors", col("overload", "socket_errors")))
    print(row("committed/s meanwhile", col("overload", "committed_per_s")))
    print("wait: %d clients, POST /transaction with Prefer: wait=%d, default config, %d s" % (
        a.wait_connections, a.wait, a.wait_seconds))
    print(row("server: commit -> answer p50 ms", col("wait", "server_p50_ms")))
    print(row("server: commit -> answer p99 ms", col("wait", "server_p99_ms")))
    print(row("server: commit -> answer p99.9 ms", col("wait", "server_p999_ms")))
    print(row("client: latency p50 ms", col("wait", "p50_ms")))
    print(row("client: latency p99 ms", col("wait", "p99_ms")))
    print(row("client: answers/s", col("wait", "answers_per_s")))
    print(row("answers >= 400 (409: insufficient funds)", col("wait", "status_4xx_5xx")))
    print(row("mean entries per SQLite transaction", col("wait", "mean_batch")))
    print(row("waits ended 202 / dropped / socket errors", col("wait", "not_answered_with_outcome")))
    print(row("CPU of other processes on the machine, cores", col("wait", "other_cpu_cores")))
    print()
    print("ratios (of medians)")
    for k, v in ratios.items():
        print("  %-44s %14s" % (k, "n/a" if v is None else "%.3f" % v))
    print()
    print("targets")
    for v in verdicts:
        mark = "n/a " if v["holds"] is None else ("PASS" if v["holds"] else "FAIL")
        val = "n/a" if v["value"] is None else ("%.3f" % v["value"] if isinstance(v["value"], float) else v["value"])
        print("  %s  %-40s %s" % (mark, v["target"], val))
    print()
    print("wrote %s (%.0f s)" % (out / "results.json", meta["elapsed_s"]))


if __name__ == "__main__":
    main()
