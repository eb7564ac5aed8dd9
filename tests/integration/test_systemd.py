"""systemd integration: the sd_notify datagrams the master sends to
$NOTIFY_SOCKET, and the shipped unit file."""
import shutil
import signal
import socket
import subprocess
import time

import pytest
import requests

from conftest import ROOT, TXPROCD

# The ledger backend plays no part here: once, on SQLite.
pytestmark = pytest.mark.backend_independent


def read_notifications(sock, until, timeout):
    """Collects datagrams until one equals/starts with `until`; returns them
    with the monotonic time each arrived."""
    got = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        sock.settimeout(max(0.01, deadline - time.monotonic()))
        try:
            data = sock.recv(4096).decode()
        except socket.timeout:
            break
        for line in data.splitlines():
            got.append((time.monotonic(), line))
            if line.startswith(until):
                return got
    pytest.fail("no %r within %ss; got %r" % (until, timeout, [l for _, l in got]))


@pytest.fixture
def notify_socket(tmp_path):
    path = str(tmp_path / "notify.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    yield path, sock
    sock.close()


def test_sd_notify_ready_only_when_serving_then_watchdog_and_stopping(server_factory, notify_socket):
    path, sock = notify_socket
    srv = server_factory(start=False, env={"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "2000000"})
    srv.start(wait=False)
    got = read_notifications(sock, "READY=1", timeout=20)
    # The moment READY=1 arrives, the API must already answer.
    r = requests.get(srv.base + "/healthz", timeout=5)
    assert r.status_code == 200
    assert all(c["state"] == "running" for c in srv.children())
    got += read_notifications(sock, "WATCHDOG=1", timeout=5)
    srv.signal(signal.SIGTERM)
    got += read_notifications(sock, "STOPPING=1", timeout=10)
    assert srv.terminate(timeout=20) == 0
    lines = [l for _, l in got]
    assert lines.index("READY=1") < lines.index("STOPPING=1")


def test_ready_waits_for_every_child(server_factory, notify_socket, tmp_path):
    """The socket is bound before the first fork, so /healthz answers before
    the workers run: READY=1 must wait for the children themselves. One
    worker is held back at its start; READY=1 comes only once it runs."""
    path, sock = notify_socket
    hold = tmp_path / "hold-workers"
    hold.write_text("")
    srv = server_factory(start=False, env={"NOTIFY_SOCKET": path,
                                           "TXP_FAILPOINT_WORKER_HOLD": str(hold)})
    srv.start(wait=False)
    early = []
    deadline = time.monotonic() + 2.0
    while time.monotonic() < deadline:
        sock.settimeout(max(0.01, deadline - time.monotonic()))
        try:
            early += sock.recv(4096).decode().splitlines()
        except socket.timeout:
            break
    assert "READY=1" not in early, early
    assert requests.get(srv.base + "/healthz", timeout=5).status_code == 200  # serving, not ready
    assert any(c["role"] == "worker" and c["state"] != "running" for c in srv.children())
    hold.unlink()
    read_notifications(sock, "READY=1", timeout=20)
    assert all(c["state"] == "running" for c in srv.children())
    srv.wait_children_running()


def test_status_lines_summarise_the_server(server_factory, notify_socket):
    path, sock = notify_socket
    srv = server_factory(start=False, env={"NOTIFY_SOCKET": path})
    srv.start(wait=False)
    got = read_notifications(sock, "STATUS=", timeout=20)
    status = [l for _, l in got if l.startswith("STATUS=")][0]
    assert "frontends" in status and "workers" in status and "queue" in status, status


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze not installed")
def test_unit_file_verifies(tmp_path):
    # verify checks that ExecStart names an executable: point it at this build.
    unit = (ROOT / "dist" / "txprocd.service").read_text()
    unit = unit.replace("/usr/local/bin/txprocd", str(TXPROCD))
    target = tmp_path / "txprocd.service"
    target.write_text(unit)
    r = subprocess.run(["systemd-analyze", "verify", str(target)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    for needed in ("Type=notify", "KillMode=mixed", "ProtectSystem=strict", "ProtectHome=yes",
                   "PrivateTmp=yes", "NoNewPrivileges=yes", "SystemCallArchitectures=native",
                   "RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX", "StateDirectory=txprocd"):
        assert needed in unit, needed
    settings = [l.strip() for l in unit.splitlines() if l.strip() and not l.startswith("#")]
    assert not any(l.startswith("DynamicUser=") for l in settings), \
        "DynamicUser implies RemoveIPC and loses the shm segment"
    assert "RemoveIPC=no" in settings
    stop = int(next(l for l in unit.splitlines() if l.startswith("TimeoutStopSec=")).split("=")[1])
    assert stop > 10 + 5, "TimeoutStopSec must exceed the drain timeout plus the frontend grace"
