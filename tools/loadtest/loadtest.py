#!/usr/bin/python3
"""make loadtest: starts a fresh txprocd (temp ledger with demo accounts, its
own port and shm name), runs locustfile.py headless against it for a bounded
time, drains the server, and fails when Locust saw any unexpected failure or
when the ledger invariant does not hold (sum of balances = initial sum + sum
of applied amounts, no negative balance, every txid handed out recorded once
with a final status), or when more than 2% of the waiting requests ended
with 202 instead of their outcome.

    tools/loadtest/loadtest.py --seconds 20 --users 50 [--build build]"""
import argparse
import csv
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_healthy(port, proc, timeout=20):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            sys.exit("txprocd exited with %s" % proc.returncode)
        try:
            with urllib.request.urlopen("http://127.0.0.1:%d/healthz" % port, timeout=1) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.05)
    sys.exit("txprocd not healthy within %ds" % timeout)


def ledger_problems(db, initial):
    con = sqlite3.connect("file:%s?mode=ro" % db, uri=True)
    total = con.execute("SELECT SUM(balance) FROM users").fetchone()[0]
    applied = con.execute("SELECT COALESCE(SUM(amount), 0) FROM transactions "
                          "WHERE txid IS NOT NULL AND status = 'applied' "
                          # transfers move money between accounts; they add none
                          "AND COALESCE(kind, '') <> 'transfer'").fetchone()[0]
    negative = con.execute("SELECT COUNT(*) FROM users WHERE balance < 0").fetchone()[0]
    rows = con.execute("SELECT COUNT(*) FROM transactions").fetchone()[0]
    # A fresh segment on an empty ledger hands out txids 1, 2, 3...: after
    # the drain every one of them must be recorded once, with a final status.
    ids, distinct, top = con.execute("SELECT COUNT(txid), COUNT(DISTINCT txid), COALESCE(MAX(txid), 0) "
                                     "FROM transactions").fetchone()
    not_final = con.execute("SELECT COUNT(*) FROM transactions WHERE status NOT IN "
                            "('applied', 'insufficient_funds', 'unknown_account', 'rejected', "
                            "'duplicate')").fetchone()[0]
    con.close()
    problems = []
    if not (ids == distinct == top):
        problems.append("txids 1..%d should each be recorded once: %d rows with a txid, %d distinct"
                        % (top, ids, distinct))
    if not_final:
        problems.append("%d rows without a final status" % not_final)
    if total != initial + applied:
        problems.append("sum of balances %d != initial %d + applied %d" % (total, initial, applied))
    if negative:
        problems.append("%d negative balances" % negative)
    return problems, rows


# Waiting requests whose wait elapsed (202) instead of bringing the outcome.
# A few may, under load on two cores; many mean the outcome path is broken
# while every such request still "succeeds".
MAX_ELAPSED_SHARE = 0.02


def wait_problems(stats_csv):
    with open(stats_csv, newline="") as f:
        rows = {r["Name"]: int(r["Request Count"]) for r in csv.DictReader(f)}
    waits = sum(n for name, n in rows.items()
                if ("(Prefer: wait)" in name or "(Idempotency-Key)" in name) and "[" not in name)
    elapsed = sum(n for name, n in rows.items() if "[202 wait elapsed]" in name)
    print("loadtest: %d waiting requests, %d ended with 202 (wait elapsed)" % (waits, elapsed))
    if waits < 50:
        return ["only %d waiting requests were made" % waits]
    if elapsed > MAX_ELAPSED_SHARE * waits:
        return ["%d of %d waits ended with 202 instead of the outcome (at most %.0f%%)"
                % (elapsed, waits, MAX_ELAPSED_SHARE * 100)]
    return []


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=int, default=20)
    ap.add_argument("--users", type=int, default=50)
    ap.add_argument("--accounts", type=int, default=10000)
    ap.add_argument("--build", default=os.environ.get("TXP_BUILD", "build"))
    args = ap.parse_args()
    work = tempfile.mkdtemp(prefix="txp-loadtest-")
    db = os.path.join(work, "users.db")
    build = os.path.join(ROOT, args.build)
    subprocess.run([os.path.join(build, "txctl"), "seed", "--db", db, "--accounts",
                    str(args.accounts)], check=True, capture_output=True)
    con = sqlite3.connect(db)
    initial = con.execute("SELECT SUM(balance) FROM users").fetchone()[0]
    con.close()
    port = free_port()
    log = open(os.path.join(work, "txprocd.log"), "wb")
    server = subprocess.Popen([os.path.join(build, "txprocd"), "--listen", "127.0.0.1:%d" % port,
                               "--db", db, "--shm-name", "/txp-loadtest-%d" % os.getpid()],
                              stdout=log, stderr=log, start_new_session=True)
    try:
        wait_healthy(port, server)
        env = dict(os.environ, TXP_ACCOUNTS=str(args.accounts))
        locust = subprocess.run(
            [sys.executable, "-m", "locust", "-f", os.path.join(ROOT, "locustfile.py"), "--headless",
             "-u", str(args.users), "-r", str(args.users), "-t", "%ds" % args.seconds,
             "--host", "http://127.0.0.1:%d" % port, "--only-summary",
             "--csv", os.path.join(work, "locust")], env=env, timeout=args.seconds + 120)
        server.send_signal(signal.SIGTERM)
        rc = server.wait(60)
    finally:
        if server.poll() is None:
            os.killpg(server.pid, signal.SIGKILL)
    problems, rows = ledger_problems(db, initial)
    problems += wait_problems(os.path.join(work, "locust_stats.csv"))
    if locust.returncode != 0:
        problems.append("locust reported failures (exit %d)" % locust.returncode)
    if rc != 0:
        problems.append("txprocd exit %d after SIGTERM" % rc)
    print("loadtest: %d transactions recorded; ledger invariant %s" %
          (rows, "holds" if not problems else "see below"))
    for p in problems:
        print("FAIL: " + p)
    print("loadtest: %s (logs in %s)" % ("PASS" if not problems else "FAIL", work))
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
