"""Machinery shared by the benchmark drivers (bench.py, scale.py): start a
txprocd or an nginx on a free loopback port with its own temp directory and
shared-memory name, drive it with wrk, sample the server's shared-memory
counters through txctl, and stop everything that was started, whatever
happens. Standard library only.
"""
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
BENCH_DIR = ROOT / "tools" / "bench"
POST_LUA = BENCH_DIR / "post.lua"
NGINX_CONF = BENCH_DIR / "nginx.conf"

# Outcome counters: every transaction a worker committed has exactly one.
COMMITTED = ("tx_applied_deposit", "tx_applied_withdrawal", "tx_insufficient_funds",
             "tx_unknown_account", "tx_rejected")

_started = []  # Popen objects still to be stopped at exit


def log(msg):
    print("bench: " + msg, flush=True)


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def kill_group(proc, sig=signal.SIGKILL):
    """Signals the process group we created for proc (start_new_session)."""
    try:
        os.killpg(proc.pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def stop_all():
    for p in list(_started):
        if p.poll() is None:
            kill_group(p)
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass
        _started.remove(p)


def wait_http(port, path="/healthz", timeout=15, proc=None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            return False
        try:
            with urllib.request.urlopen("http://127.0.0.1:%d%s" % (port, path), timeout=1) as r:
                if r.status in (200, 202):
                    return True
        except Exception:
            pass
        time.sleep(0.05)
    return False


def seed(build, db, accounts):
    subprocess.run([str(build / "txctl"), "seed", "--db", str(db), "--accounts", str(accounts)],
                   check=True, capture_output=True, timeout=600)


class Txprocd:
    """A fresh txprocd on a seeded temp ledger. args: extra flags."""

    def __init__(self, build, accounts=10000, args=(), workdir=None, template=None, db=None):
        self.build = Path(build)
        self.tmp = Path(workdir or tempfile.mkdtemp(prefix="txp-bench-"))
        # db: a ledger made elsewhere (a seeded PostgreSQL database), used as is.
        self.given_db = db
        self.db = db or self.tmp / "users.db"
        self.accounts = accounts
        self.template = template  # a seeded ledger to copy instead of seeding
        self.args = [str(a) for a in args]
        self.shm = "/txp-bench-%d-%d" % (os.getpid(), id(self) % 100000)
        self.proc = None
        self.port = None

    def start(self):
        if self.given_db:
            pass
        elif self.template:
            shutil.copyfile(self.template, self.db)
        else:
            seed(self.build, self.db, self.accounts)
        for _ in range(3):
            self.port = free_port()
            self.log = open(self.tmp / "txprocd.log", "ab")
            argv = [str(self.build / "txprocd"), "--listen", "127.0.0.1:%d" % self.port,
                    "--db", str(self.db), "--shm-name", self.shm, "--log-level", "warn",
                    *self.args]
            env = {k: v for k, v in os.environ.items() if not k.startswith("TXP_")}
            self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=self.log,
                                         stderr=self.log, env=env, start_new_session=True)
            _started.append(self.proc)
            if wait_http(self.port, proc=self.proc):
                self.wait_children()
                return self
            self.stop(kill=True)
        raise RuntimeError("txprocd did not start; log in %s" % (self.tmp / "txprocd.log"))

    def wait_children(self, timeout=10):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            kids = self.txctl("children")["children"]
            if kids and all(c["state"] == "running" for c in kids):
                return kids
            time.sleep(0.05)
        raise RuntimeError("txprocd children did not all start")

    @property
    def url(self):
        return "http://127.0.0.1:%d" % self.port

    def txctl(self, what):
        out = subprocess.run([str(self.build / "txctl"), "--shm-name", self.shm, what, "--json"],
                             capture_output=True, text=True, timeout=10)
        if out.returncode != 0:
            raise RuntimeError("txctl %s: %s" % (what, out.stderr.strip()))
        return json.loads(out.stdout)

    def sample(self):
        """(monotonic time, counters, queue) from the shared memory."""
        s = self.txctl("stats")
        return {"t": time.monotonic(), "counters": s["counters"], "queue": s["queue"],
                "children": s["children"], "master_pid": s.get("master_pid")}

    def pids(self):
        s = self.txctl("stats")
        kids = [(c["role"], c["pid"]) for c in s["children"] if c.get("pid")]
        return [("master", s["master_pid"])] + kids

    def stop(self, kill=False, timeout=60):
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            if kill:
                kill_group(self.proc)
            else:
                self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                kill_group(self.proc)
                self.proc.wait(timeout=10)
        kill_group(self.proc)  # anything left of the group
        if self.proc in _started:
            _started.remove(self.proc)
        self.log.close()
        try:
            os.unlink("/dev/shm" + self.shm)
        except OSError:
            pass
        return self.proc.returncode

    def cleanup(self):
        self.stop(kill=True)
        shutil.rmtree(self.tmp, ignore_errors=True)


class Nginx:
    """nginx with tools/bench/nginx.conf (one worker, return 202)."""

    def __init__(self):
        self.tmp = Path(tempfile.mkdtemp(prefix="txp-bench-nginx-"))
        self.proc = None
        self.port = None

    def start(self):
        nginx = shutil.which("nginx") or "/usr/sbin/nginx"
        for _ in range(3):
            self.port = free_port()
            conf = NGINX_CONF.read_text().replace("@PORT@", str(self.port)).replace(
                "@DIR@", str(self.tmp))
            (self.tmp / "nginx.conf").write_text(conf)
            self.proc = subprocess.Popen([nginx, "-p", str(self.tmp), "-c", str(self.tmp / "nginx.conf")],
                                         stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                         stderr=subprocess.DEVNULL, start_new_session=True)
            _started.append(self.proc)
            if wait_http(self.port, "/", proc=self.proc):
                return self
            self.stop()
        raise RuntimeError("nginx did not start; see %s/error.log" % self.tmp)

    @property
    def url(self):
        return "http://127.0.0.1:%d" % self.port

    def stop(self):
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGQUIT)  # graceful: finish and exit
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass
        kill_group(self.proc)
        self.proc.wait(timeout=10)
        if self.proc in _started:
            _started.remove(self.proc)

    def cleanup(self):
        self.stop()
        shutil.rmtree(self.tmp, ignore_errors=True)


def wait_port(port, timeout=10, proc=None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            return False
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return True
        except OSError:
            time.sleep(0.05)
    return False


class HttpFloor:
    """tools/bench/http_floor: a bare HTTP server + cJSON on evhttp or on
    txprocd's own layer (layer="conn"), --procs processes."""

    def __init__(self, build, procs=2, layer="evhttp"):
        self.build = Path(build)
        self.procs = procs
        self.layer = layer
        self.proc = None
        self.port = None

    def start(self):
        for _ in range(3):
            self.port = free_port()
            self.proc = subprocess.Popen([str(self.build / "http_floor"), "--port", str(self.port),
                                          "--procs", str(self.procs), "--layer", self.layer],
                                         stdin=subprocess.DEVNULL, start_new_session=True)
            _started.append(self.proc)
            if wait_port(self.port, proc=self.proc):
                return self
            self.stop()
        raise RuntimeError("http_floor did not start")

    @property
    def url(self):
        return "http://127.0.0.1:%d" % self.port

    def stop(self):
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass
        kill_group(self.proc)
        self.proc.wait(timeout=10)
        if self.proc in _started:
            _started.remove(self.proc)


def sample_until_drained(srv, seconds, interval=0.1):
    """Samples srv every interval seconds until its queue is empty or seconds
    pass; returns the samples."""
    sampler = Sampler(srv, interval=interval)
    sampler.start()
    t1 = time.monotonic()
    while time.monotonic() < t1 + seconds:
        s = sampler.samples[-1] if sampler.samples else None
        if s and s["queue"]["depth"] == 0:
            break
        time.sleep(interval)
    return sampler.stop()


def wrk(url, seconds, threads=2, connections=64, accounts=10000, batch=0, timeout_s=2, wait=0):
    """Runs wrk with post.lua; returns its BENCH_RESULT plus rates. wait > 0
    adds `Prefer: wait=<wait>` to every request."""
    env = dict(os.environ, BENCH_ACCOUNTS=str(accounts), BENCH_BATCH=str(batch), BENCH_WAIT=str(wait))
    argv = ["wrk", "-t%d" % threads, "-c%d" % connections, "-d%ds" % seconds,
            "--timeout", "%ds" % timeout_s, "-s", str(POST_LUA), url]
    out = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=seconds + 60)
    m = re.search(r"^BENCH_RESULT (\{.*\})$", out.stdout, re.M)
    if out.returncode != 0 or not m:
        raise RuntimeError("wrk failed (%d): %s %s" % (out.returncode, out.stdout[-500:],
                                                       out.stderr[-500:]))
    r = json.loads(m.group(1))
    secs = r["duration_us"] / 1e6
    e = r["errors"]
    r["seconds"] = secs
    r["rps"] = r["requests"] / secs
    # status counts answers outside 2xx/3xx: 503 and any 4xx/5xx.
    r["ok"] = r["requests"] - e["status"]
    r["ok_per_s"] = r["ok"] / secs
    r["socket_errors"] = e["connect"] + e["read"] + e["write"] + e["timeout"]
    return r


class Sampler(threading.Thread):
    """Samples a Txprocd's counters every interval seconds until stopped."""

    def __init__(self, server, interval=0.25):
        super().__init__(daemon=True)
        self.server = server
        self.interval = interval
        self.samples = []
        self.halt = threading.Event()

    def run(self):
        while not self.halt.is_set():
            try:
                self.samples.append(self.server.sample())
            except Exception:
                pass
            self.halt.wait(self.interval)

    def stop(self):
        self.halt.set()
        self.join(10)
        return self.samples


def raise_nofile(needed):
    """Raises this process's open-file soft limit (inherited by wrk and the
    server) to at least needed, up to the hard limit. Returns the new soft
    limit."""
    import resource
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < needed:
        soft = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    return soft


def wait_hist(build, shm):
    """The commit-to-answer histogram of waiting requests (tools/bench/wait_hist)."""
    out = subprocess.run([str(Path(build) / "wait_hist"), "--shm-name", shm],
                         capture_output=True, text=True, timeout=10)
    if out.returncode != 0:
        raise RuntimeError("wait_hist: " + out.stderr.strip())
    return json.loads(out.stdout)


def hist_delta(after, before):
    """Buckets of after minus those of before (both from wait_hist)."""
    seen = {(lo, hi): n for lo, hi, n in before["buckets"]}
    buckets = [[lo, hi, n - seen.get((lo, hi), 0)] for lo, hi, n in after["buckets"]]
    return {"count": after["count"] - before["count"], "sum_us": after["sum_us"] - before["sum_us"],
            "buckets": [b for b in buckets if b[2] > 0]}


def hist_quantile(h, q):
    """(estimate, bucket lo, bucket hi) of quantile q in microseconds:
    linear within the bucket that holds it, like Prometheus'
    histogram_quantile. None when the histogram is empty."""
    if h["count"] <= 0:
        return None
    rank = q * h["count"]
    seen = 0
    for lo, hi, n in h["buckets"]:
        if seen + n >= rank:
            return (lo + (hi + 1 - lo) * (rank - seen) / n, lo, hi)
        seen += n
    lo, hi, _ = h["buckets"][-1]
    return (hi, lo, hi)


def committed(sample):
    return sum(sample["counters"][k] for k in COMMITTED)


def rate(samples, t0, t1, key=committed):
    """Slope of key over the samples taken in [t0, t1] (first to last)."""
    inside = [s for s in samples if t0 <= s["t"] <= t1]
    if len(inside) < 2 or inside[-1]["t"] - inside[0]["t"] <= 0:
        return None
    return (key(inside[-1]) - key(inside[0])) / (inside[-1]["t"] - inside[0]["t"])


def group_pids(pgid):
    """Live pids in process group pgid (nginx and its worker...)."""
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open("/proc/%s/stat" % entry) as f:
                    fields = f.read().rsplit(")", 1)[1].split()
                if int(fields[2]) == pgid:
                    pids.append(int(entry))
            except (OSError, IndexError, ValueError):
                pass
    return pids


def proc_status(pid):
    """VmRSS, VmHWM, RssAnon, RssFile, RssShmem in KiB for pid."""
    out = {}
    try:
        with open("/proc/%d/status" % pid) as f:
            for line in f:
                k, _, v = line.partition(":")
                if k in ("VmRSS", "VmHWM", "RssAnon", "RssFile", "RssShmem"):
                    out[k] = int(v.split()[0])
    except OSError:
        pass
    return out


def cpu_ticks(pid):
    try:
        with open("/proc/%d/stat" % pid) as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return int(fields[11]) + int(fields[12])  # utime + stime
    except (OSError, IndexError, ValueError):
        return None


def idle_cpu(pids, seconds=5.0):
    """CPU share (percent of one core) each pid used over seconds."""
    hz = os.sysconf("SC_CLK_TCK")
    before = {p: cpu_ticks(p) for _, p in pids}
    time.sleep(seconds)
    out = []
    for role, p in pids:
        b, a = before[p], cpu_ticks(p)
        out.append({"role": role, "pid": p,
                    "cpu_percent": None if a is None or b is None else 100.0 * (a - b) / hz / seconds})
    return out


def _busy_ticks():
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    return sum(v) - v[3] - v[4]  # all but idle and iowait


def _own_seconds():
    import resource
    s, c = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return s.ru_utime + s.ru_stime + c.ru_utime + c.ru_stime


class CpuWatch:
    """How much CPU processes other than ours used while a measurement ran:
    busy time of the whole machine (/proc/stat) minus this driver, its
    finished children (wrk, txctl) and the given server pids."""

    def __init__(self, pids=()):
        self.pids = list(pids)
        self.hz = os.sysconf("SC_CLK_TCK")
        self.t0 = time.monotonic()
        self.busy0 = _busy_ticks()
        self.own0 = _own_seconds()
        self.srv0 = {p: cpu_ticks(p) or 0 for p in self.pids}

    def cores(self):
        """Other processes' CPU over the interval, in cores (1.0 = one core busy)."""
        secs = time.monotonic() - self.t0
        busy = (_busy_ticks() - self.busy0) / self.hz
        own = _own_seconds() - self.own0
        own += sum(((cpu_ticks(p) or self.srv0[p]) - self.srv0[p]) for p in self.pids) / self.hz
        return max(0.0, (busy - own) / secs) if secs > 0 else None


def med(values):
    v = [x for x in values if x is not None]
    return statistics.median(v) if v else None


def spread(values):
    v = [x for x in values if x is not None]
    return {"median": med(v), "min": min(v) if v else None, "max": max(v) if v else None,
            "runs": list(values)}


def machine():
    info = {"cores": os.cpu_count(), "kernel": os.uname().release}
    try:
        with open("/proc/cpuinfo") as f:
            models = [l.split(":", 1)[1].strip() for l in f if l.startswith("model name")]
        info["cpu"] = models[0] if models else "?"
    except OSError:
        info["cpu"] = "?"
    try:
        with open("/proc/meminfo") as f:
            info["mem_gib"] = round(int(f.readline().split()[1]) / 1048576, 1)
    except OSError:
        pass
    return info


def loadavg():
    try:
        with open("/proc/loadavg") as f:
            return [float(x) for x in f.read().split()[:3]]
    except OSError:
        return None


def git_commit():
    try:
        c = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
                           capture_output=True, text=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return c + ("+uncommitted" if dirty else "")
    except Exception:
        return "?"


def versions():
    def first_line(argv):
        try:
            p = subprocess.run(argv, capture_output=True, text=True, timeout=10)
            return (p.stdout + p.stderr).strip().splitlines()[0]
        except Exception:
            return "?"
    return {"wrk": first_line(["wrk", "--version"]),
            "nginx": first_line([shutil.which("nginx") or "/usr/sbin/nginx", "-v"]),
            "sqlite": first_line(["sqlite3", "--version"]).split()[0]}


def ceiling(build, variant, batch, seconds, accounts=10000):
    tmp = Path(tempfile.mkdtemp(prefix="txp-bench-ceiling-"))
    try:
        out = subprocess.run([str(Path(build) / "sqlite_ceiling"), "--db", str(tmp / "c.db"),
                              "--variant", variant, "--batch", str(batch), "--seconds", str(seconds),
                              "--accounts", str(accounts)],
                             capture_output=True, text=True, timeout=seconds + 600)
        if out.returncode != 0:
            raise RuntimeError("sqlite_ceiling: " + out.stderr.strip())
        return json.loads(out.stdout)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
