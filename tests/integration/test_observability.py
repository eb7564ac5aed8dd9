"""What operators look at: the Prometheus exposition (checked by promtool on a
live scrape), the dashboard in a real headless Chromium under load, and
`txctl top` in a real terminal (tmux)."""
import json
import os
import re
import signal
import shutil
import subprocess
import time

import pytest
import requests

from conftest import ROOT, TXCTL, Load, card, make_ops, wait_until

PROMETHEUS_ACCEPT = ("application/openmetrics-text;version=1.0.0,application/openmetrics-text;"
                     "version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1")
ARTIFACTS = ROOT / "tests" / "artifacts"


def scrape(srv, **kw):
    return requests.get(srv.base + "/metrics", timeout=5, **kw)


def prom_value(text, name):
    m = re.search(r"^%s (\S+)$" % re.escape(name), text, re.M)
    assert m, "no sample %s" % name
    return float(m.group(1))


@pytest.fixture
def busy_server(server_factory):
    srv = server_factory(accounts=1000)
    ids = [srv.submit(card(i), 10 + i) for i in range(30)]
    srv.submit(card(1), -10**12)           # insufficient funds
    srv.wait_final(ids, timeout=20)
    return srv


def test_prometheus_scrape_passes_promtool(busy_server):
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool not installed (Debian package prometheus; CI installs it)")
    r = scrape(busy_server, headers={"Accept": PROMETHEUS_ACCEPT})
    assert r.status_code == 200
    assert r.headers["Content-Type"] == "text/plain; version=0.0.4; charset=utf-8"
    check = subprocess.run([promtool, "check", "metrics"], input=r.text, capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr


def test_prometheus_values_match_the_json_counters(busy_server):
    srv = busy_server
    wait_until(lambda: srv.metrics()["counters"]["tx_insufficient_funds"] == 1, 10, "all outcomes")
    text = scrape(srv, params={"format": "prometheus"}).text
    counters = srv.metrics()["counters"]
    assert prom_value(text, 'txprocd_transactions_total{outcome="applied_deposit"}') == \
        counters["tx_applied_deposit"] == 30
    assert prom_value(text, 'txprocd_transactions_total{outcome="insufficient_funds"}') == 1
    assert prom_value(text, 'txprocd_requests_total{outcome="accepted"}') == counters["tx_accepted"]
    assert prom_value(text, "txprocd_queue_capacity") == 65536
    assert prom_value(text, 'txprocd_children{role="worker",state="running"}') == 2
    # Histogram: cumulative buckets never decrease and end at the count.
    buckets = [float(v) for v in re.findall(r'^txprocd_commit_latency_seconds_bucket\{le="[^"]+"\} (\S+)$',
                                            text, re.M)]
    assert buckets == sorted(buckets)
    assert buckets[-1] == prom_value(text, "txprocd_commit_latency_seconds_count") == 31
    assert prom_value(text, "txprocd_commit_latency_seconds_sum") > 0


@pytest.mark.parametrize("headers,params,prometheus", [
    ({}, {}, False),                                               # the prototype's dashboard
    ({"Accept": "text/html,application/xhtml+xml,*/*;q=0.8"}, {}, False),   # a browser
    ({"Accept": "application/json"}, {}, False),
    ({"Accept": PROMETHEUS_ACCEPT}, {}, True),
    ({"Accept": "text/plain"}, {}, True),
    ({}, {"format": "prometheus"}, True),
    ({"Accept": PROMETHEUS_ACCEPT}, {"format": "json"}, False),
])
def test_metrics_format_negotiation(shared_server, headers, params, prometheus):
    r = scrape(shared_server, headers=headers, params=params)
    assert r.status_code == 200
    if prometheus:
        assert r.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        assert "# TYPE txprocd_transactions_total counter" in r.text
    else:
        assert r.headers["Content-Type"] == "application/json"
        assert "transaction_counts" in r.json()


def chromium_dump(url, shot=None):
    """Loads url in headless Chromium for ~2.5 s of page time; returns
    (DOM, stderr). With shot, also saves a screenshot there."""
    base = ["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
            "--disable-background-networking", "--disable-component-update", "--disable-sync",
            "--user-data-dir=%s" % (ARTIFACTS / "chromium-profile"), "--enable-logging=stderr", "--v=0",
            "--virtual-time-budget=2500", "--window-size=1280,1000"]
    args = base + (["--screenshot=%s" % shot] if shot else ["--dump-dom"]) + [url]
    r = subprocess.run(args, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr[-2000:]
    return r.stdout, r.stderr


def shown(dom, element_id):
    m = re.search(r'id="%s"[^>]*>([^<]*)<' % element_id, dom)
    assert m, "element #%s missing from the rendered page" % element_id
    return m.group(1).strip()


@pytest.mark.skipif(shutil.which("chromium") is None, reason="chromium not installed (CI installs it)")
def test_dashboard_in_headless_chromium_updates_under_load(server_factory):
    srv = server_factory(accounts=1000)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    load = Load(srv.port, make_ops(40000, 1000), threads=8, deadline_s=60).start()
    try:
        time.sleep(1)
        first, err1 = chromium_dump(srv.base + "/")
        time.sleep(1.5)
        second, err2 = chromium_dump(srv.base + "/")
        chromium_dump(srv.base + "/", shot=ARTIFACTS / "dashboard.png")
    finally:
        load.stop.set()
        load.join(60)
    for err in (err1, err2):
        console = [l for l in err.splitlines() if "CONSOLE" in l or "Uncaught" in l]
        assert not console, "console messages: %r" % console[:5]
    a, b = shown(first, "total_requests"), shown(second, "total_requests")
    assert a and b and a != "-" and a != b, "total requests shown did not change: %r %r" % (a, b)
    assert int(b.replace(",", "")) > int(a.replace(",", ""))
    assert "worker" in first and "frontend" in first, "children table not rendered"
    assert (ARTIFACTS / "dashboard.png").stat().st_size > 10000


@pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux not installed")
def test_txctl_top_in_tmux_refreshes_and_quits_on_q(server):
    session = "txp-top-%d" % os.getpid()
    cmd = "%s --shm-name %s top" % (TXCTL, server.shm_name)
    subprocess.run(["tmux", "new-session", "-d", "-s", session, "-x", "120", "-y", "40", cmd], check=True)
    try:
        def screen():
            return subprocess.run(["tmux", "capture-pane", "-p", "-t", session], capture_output=True,
                                  text=True).stdout
        wait_until(lambda: "queue" in screen() and "worker" in screen(), 10, "txctl top to draw")
        before = screen()
        for i in range(20):
            server.submit(card(i), 3)
        # A refresh may land while the POSTs are still going: wait for the
        # one that shows them all.
        wait_until(lambda: screen() != before and re.search(r"accepted\D+20\b", screen()), 5,
                   "txctl top to refresh with all 20 accepted")
        subprocess.run(["tmux", "send-keys", "-t", session, "q"], check=True)
        wait_until(lambda: subprocess.run(["tmux", "has-session", "-t", session],
                                          capture_output=True).returncode != 0, 5, "txctl top to quit on q")
    finally:
        subprocess.run(["tmux", "kill-session", "-t", session], capture_output=True)


def test_txctl_top_without_terminal_prints_plain_lines(server):
    r = subprocess.run([str(TXCTL), "--shm-name", server.shm_name, "top", "--iterations", "2"],
                       capture_output=True, text=True, timeout=10)
    assert r.returncode == 0, r.stderr
    assert "\x1b[" not in r.stdout, "escape sequences written to a pipe"
    assert len([l for l in r.stdout.splitlines() if l.startswith("txprocd")]) == 2


def test_json_log_format_writes_one_object_per_line_from_every_process(server_factory):
    """--log-format json: every line every process writes (start, a worker
    killed and replaced, the drain) parses as an object with the documented
    fields; the default stays text."""
    srv = server_factory(args=["--log-format", "json"], workers=1, frontends=1)
    srv.wait_final([srv.submit(card(1), 5)], timeout=20)
    (worker,) = srv.child_pids("worker")
    os.kill(worker, signal.SIGKILL)
    wait_until(lambda: srv.child_pids("worker") and srv.child_pids("worker") != [worker], 20,
               "a new worker")
    srv.stop_and_check()
    lines = [l for l in srv.log_text().splitlines() if l and not l.startswith("# ")]
    assert len(lines) >= 6, lines
    records = []
    for line in lines:
        rec = json.loads(line)          # every line, or the test fails here
        assert set(rec) == {"time", "level", "role", "pid", "node", "message"}, rec
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", rec["time"]), rec
        assert rec["level"] in ("debug", "info", "warn", "error"), rec
        assert isinstance(rec["pid"], int) and rec["node"] is None, rec
        records.append(rec)
    roles = {r["role"] for r in records}
    assert {"master", "frontend-0", "worker-0"} <= roles, roles
    assert any(r["role"] == "master" and r["level"] in ("warn", "error") and str(worker) in r["message"]
               for r in records), "the killed worker is not reported:\n%s" % "\n".join(lines)


def test_text_log_format_is_the_default(server):
    lines = [l for l in server.log_text().splitlines() if l and not l.startswith("# ")]
    assert lines and not any(l.startswith("{") for l in lines), lines[:5]
    assert any(" master[" in l and " info: " in l for l in lines), lines[:5]
