"""The cluster's packaging, tested without a Docker engine: the compose file
wires two txprocd nodes, the pg_auto_failover formation and the load
balancer together; the image has the libraries the binary links; and the
HAProxy configuration it ships is run, as is, in front of two real nodes on
one PostgreSQL ledger (addresses substituted): requests reach both nodes, and
a node that drains is taken out before it stops."""
import re
import shutil
import signal
import subprocess
import time

import pytest
import requests
import yaml

from conftest import ROOT, card, free_port, wait_final, wait_until

STRIDE = 64
HAPROXY_CFG = ROOT / "dist" / "cluster" / "haproxy.cfg"


def cluster():
    return yaml.safe_load((ROOT / "docker-compose.cluster.yaml").read_text())


def txprocd_services(doc):
    return {name: svc for name, svc in doc["services"].items()
            if "TXP_NODE_ID" in (svc.get("environment") or {})}


@pytest.mark.backend_independent
def test_cluster_compose_wires_nodes_formation_and_balancer():
    doc = cluster()
    services = doc["services"]
    nodes = txprocd_services(doc)
    ids = sorted(int(svc["environment"]["TXP_NODE_ID"]) for svc in nodes.values())
    assert len(ids) == 2 and len(set(ids)) == 2 and all(1 <= i <= 63 for i in ids), ids
    pg = {name for name, svc in services.items()
          if (svc.get("environment") or {}).get("PGAF_ROLE") == "postgres"}
    monitors = [name for name, svc in services.items()
                if (svc.get("environment") or {}).get("PGAF_ROLE") == "monitor"]
    assert len(pg) == 2 and len(monitors) == 1, (pg, monitors)
    for name in pg:
        assert "@%s:5432/" % monitors[0] in services[name]["environment"]["PGAF_MONITOR"]
    for name, svc in nodes.items():
        uri = svc["environment"]["TXP_DB_PATH"]
        hosts = re.match(r"postgresql://[^@]+@([^/]+)/", uri).group(1).split(",")
        assert {h.split(":")[0] for h in hosts} == pg, uri
        assert "target_session_attrs=read-write" in uri, uri
        assert svc["depends_on"]["ledger-init"]["condition"] == "service_completed_successfully"
        assert svc["hostname"] == name and svc.get("shm_size")
        assert "/healthz" in " ".join(svc["healthcheck"]["test"])
    # The balancer sends to exactly these nodes; only it and Locust publish
    # ports, on loopback.
    lb = services["haproxy"]
    assert any(v.startswith("./dist/cluster/haproxy.cfg:") for v in lb["volumes"])
    servers = re.findall(r"^\s*server\s+\S+\s+(\S+):8000\b", HAPROXY_CFG.read_text(), re.M)
    assert sorted(servers) == sorted(nodes), servers
    published = {name for name, svc in services.items() if svc.get("ports")}
    assert published == {"haproxy", "locust-master"}, published
    assert all(str(p).startswith("127.0.0.1:") for name in published for p in services[name]["ports"])
    assert "http://haproxy:8000" in services["locust-master"]["command"]
    # The formation's image: Debian's packages, and the files it copies exist.
    pgaf = (ROOT / "dist" / "cluster" / "Dockerfile.pgaf").read_text()
    for pkg in ("postgresql-15", "postgresql-15-auto-failover", "pg-auto-failover-cli"):
        assert re.search(r"\b%s\b" % re.escape(pkg), pgaf), pkg
    for src in re.findall(r"^COPY\s+(\S+)\s", pgaf, re.M):
        assert (ROOT / src).exists(), src
    assert re.search(r"^USER postgres$", pgaf, re.M)


@pytest.mark.backend_independent
def test_image_has_a_runtime_package_for_every_library_the_binary_links():
    libs = re.search(r"^LIBS\s*=\s*(.*)$", (ROOT / "Makefile").read_text(), re.M).group(1).split()
    runtime = {"-lsqlite3": "libsqlite3-0", "-lpq": "libpq5", "-levent": "libevent-2.1-7",
               "-lcjson": "libcjson1", "-lhttp_parser": "libhttp-parser2.9",
               "-lpthread": None, "-lm": None}
    dockerfile = (ROOT / "Dockerfile").read_text()
    final_stage = dockerfile.rsplit("\nFROM ", 1)[1]
    build_stage = dockerfile.split("\nFROM ", 2)[1]
    for lib in libs:
        assert lib in runtime, "no runtime package known for %s: add it here and to the Dockerfile" % lib
        if runtime[lib]:
            assert re.search(r"\b%s\b" % re.escape(runtime[lib]), final_stage), runtime[lib]
            dev = {"-lsqlite3": "libsqlite3-dev", "-lpq": "libpq-dev", "-levent": "libevent-dev",
                   "-lcjson": "libcjson-dev", "-lhttp_parser": "libhttp-parser-dev"}[lib]
            assert re.search(r"\b%s\b" % re.escape(dev), build_stage), dev


def haproxy_config(tmp_path, port, backends):
    """The shipped configuration with loopback addresses for the nodes."""
    text = HAPROXY_CFG.read_text().replace("bind :8000", "bind 127.0.0.1:%d" % port)
    for name, node_port in backends.items():
        text, n = re.subn(r"\b%s:8000\b" % re.escape(name), "127.0.0.1:%d" % node_port, text)
        assert n == 1, name
    cfg = tmp_path / "haproxy.cfg"
    cfg.write_text(text)
    return cfg


@pytest.mark.postgres_only
def test_shipped_haproxy_config_spreads_requests_and_loses_none_while_a_node_drains(server_factory, tmp_path):
    if shutil.which("haproxy") is None:
        pytest.fail("haproxy is missing: make test installs it (PG_TEST_PACKAGES)")
    a = server_factory(backend="postgres", args=["--node-id", "1"])
    b = server_factory(backend="postgres", db=a.db, args=["--node-id", "2"])
    port = free_port()
    cfg = haproxy_config(tmp_path, port, {"txprocd-1": a.port, "txprocd-2": b.port})
    check = subprocess.run(["haproxy", "-c", "-f", str(cfg)], capture_output=True, text=True,
                           timeout=30)
    assert check.returncode == 0, check.stdout + check.stderr
    lb = subprocess.Popen(["haproxy", "-db", "-f", str(cfg)], stdout=subprocess.DEVNULL,
                          stderr=open(tmp_path / "haproxy.log", "wb"), start_new_session=True)
    try:
        url = "http://127.0.0.1:%d" % port
        s = requests.Session()

        def post(i):
            r = s.post(url + "/transaction", json={"card_number": card(i), "amount": 3}, timeout=10)
            assert r.status_code == 202, r.text
            return int(r.json()["id"])

        def serving():
            try:
                return s.get(url + "/healthz", timeout=2).status_code == 200
            except requests.ConnectionError:
                assert lb.poll() is None, (tmp_path / "haproxy.log").read_text()
                return False

        wait_until(serving, 20, "haproxy to serve")
        ids = [post(i) for i in range(40)]
        assert {t % STRIDE for t in ids} == {1, 2}, ids
        assert set(wait_final(a.db, ids, timeout=30).values()) == {"applied"}
        # Node 1 drains: /healthz says 503 at once and its socket closes a
        # second later. Through the balancer no request fails meanwhile
        # (health checks take the node out; a refused connection is retried
        # on the other node, never a request that reached one), and once it
        # is out everything goes to node 2.
        a.signal(signal.SIGTERM)
        during = []
        t_end = time.monotonic() + 3
        while time.monotonic() < t_end:
            during.append(post(len(during)))
            time.sleep(0.02)
        assert a.terminate() == 0
        later = [post(i) for i in range(20)]
        assert {t % STRIDE for t in later} == {2}, later
        rows = wait_final(a.db, during + later, timeout=30)
        assert set(rows.values()) == {"applied"}, rows
    finally:
        lb.terminate()
        try:
            lb.wait(10)
        except subprocess.TimeoutExpired:
            lb.kill()
