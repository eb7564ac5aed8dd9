"""Docker packaging, tested without a Docker engine: the compose file and the
Dockerfile are checked for what operators rely on, and the image's exact
entry point and environment are run on this machine (with the volume path,
the binary directory and the port substituted) to check that it serves."""
import json
import os
import re
import shlex
import signal
import subprocess

import pytest
import requests
import yaml

from conftest import BUILD, ROOT, card, free_port, wait_until

# The ledger backend plays no part here: once, on SQLite.
pytestmark = pytest.mark.backend_independent

DOCKERFILE = (ROOT / "Dockerfile").read_text()


def dockerfile_instructions():
    """[(INSTRUCTION, argument text)] with line continuations joined."""
    text = re.sub(r"\\\n", " ", DOCKERFILE)
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def dockerfile_env():
    env = {}
    for word, rest in dockerfile_instructions():
        if word == "ENV":
            for item in shlex.split(rest):
                key, _, value = item.partition("=")
                env[key] = value
    return env


def compose():
    return yaml.safe_load((ROOT / "docker-compose.yaml").read_text())


def test_compose_file_has_the_services_operators_need():
    doc = compose()
    services = doc["services"]
    assert {"txprocd", "locust-master", "locust-worker"} <= set(services)
    tx = services["txprocd"]
    assert any(str(p).endswith(":8000") for p in tx["ports"])
    assert any(str(v).split(":")[1] == "/var/lib/txprocd" for v in tx["volumes"])
    assert tx["volumes"][0].split(":")[0] in doc["volumes"]
    hc = tx["healthcheck"]
    assert "/healthz" in " ".join(hc["test"]) and hc["interval"] and hc["retries"] >= 1
    assert tx["restart"] in ("always", "unless-stopped", "on-failure")
    assert tx.get("shm_size")
    grace = int(str(tx["stop_grace_period"]).rstrip("s"))
    assert grace > 15, "the stop grace must cover the drain timeout plus the frontend grace"
    master = services["locust-master"]
    assert "locustfile.py" in master["command"] and "http://txprocd:8000" in master["command"]
    assert any(str(p).endswith(":8089") for p in master["ports"])
    assert "--worker" in services["locust-worker"]["command"]


def test_dockerfile_is_multistage_non_root_with_volume_and_healthcheck():
    ins = dockerfile_instructions()
    froms = [rest for word, rest in ins if word == "FROM"]
    assert froms[0].startswith("debian:bookworm ") and froms[-1] == "debian:bookworm-slim"
    users = [rest for word, rest in ins if word == "USER"]
    assert users and users[-1] not in ("root", "0")
    assert ("VOLUME", "/var/lib/txprocd") in ins
    assert ("STOPSIGNAL", "SIGTERM") in ins
    assert any(word == "HEALTHCHECK" and "/healthz" in rest for word, rest in ins)
    env = dockerfile_env()
    assert env["TXP_LISTEN"] == "0.0.0.0:8000"
    assert env["TXP_DB_PATH"].startswith("/var/lib/txprocd/")


def test_image_entrypoint_and_environment_serve_outside_docker(tmp_path):
    """Runs ENTRYPOINT + CMD with the image's ENV and compose's environment."""
    ins = dockerfile_instructions()
    entry = json.loads(next(rest for word, rest in ins if word == "ENTRYPOINT"))
    cmd = json.loads(next(rest for word, rest in ins if word == "CMD"))
    healthcheck = json.loads(next(rest for word, rest in ins if word == "HEALTHCHECK")
                             .split(" CMD ", 1)[1])
    port = free_port()
    volume = tmp_path / "var-lib-txprocd"
    volume.mkdir(mode=0o700)

    def here(value):
        return (value.replace("/var/lib/txprocd", str(volume))
                .replace("/usr/local/bin/docker-entrypoint.sh", str(ROOT / "dist" / "docker-entrypoint.sh"))
                .replace(":8000", ":%d" % port))
    env = {k: here(v) for k, v in dockerfile_env().items()}
    env.update({k: here(str(v)) for k, v in compose()["services"]["txprocd"]["environment"].items()})
    env["TXP_SHM_NAME"] = "/txp-image-%d" % os.getpid()   # keep tests apart
    env["PATH"] = "%s:/usr/bin:/bin" % BUILD
    argv = [here(a) for a in entry + cmd]
    log = open(tmp_path / "entrypoint.log", "wb")
    proc = subprocess.Popen(argv, env=env, cwd=volume, stdout=log, stderr=log, start_new_session=True)
    try:
        base = "http://127.0.0.1:%d" % port

        def serving():
            try:
                return requests.get(base + "/healthz", timeout=1).status_code == 200
            except requests.RequestException:
                return False
        wait_until(serving, 20, "the entrypoint's server to answer")
        r = requests.get(base + "/balance", params={"card_number": card(9999)}, timeout=5)
        assert r.status_code == 200, "compose seeds 10,000 demo accounts"
        r = requests.post(base + "/transaction", json={"card_number": card(1), "amount": 5}, timeout=5)
        assert r.status_code == 202
        hc = subprocess.run([here(a) for a in healthcheck], capture_output=True, timeout=10)
        assert hc.returncode == 0, hc.stderr
        assert "txprocd" in open("/proc/%d/cmdline" % proc.pid).read(), "entrypoint must exec txprocd"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        try:
            os.unlink("/dev/shm" + env["TXP_SHM_NAME"])
        except OSError:
            pass
