"""The container image, built from the Dockerfile and run as a cluster would run it: read-only root filesystem,
an arbitrary UID in group 0, its health check, a real client downloading through it, and a graceful stop.

Needs a Docker daemon (``.ci/run`` starts one); where none runs the test is skipped, and says so. The public image
registry may be unreachable, so the base image is made locally with ``debootstrap`` (Debian bookworm with Python
3.11, trusting this machine's CA bundle, as a corporate network needs) and passed to the Dockerfile as ``BASE``.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from tests.fakehub import FakeHub
from tests.fixtures import odd_files
from tests.helpers import ROOT, client_env, free_port, request, run_client, wait_until

BASE = "hubproxy-base:bookworm"
CA = Path("/etc/ssl/certs/ca-certificates.crt")


def _docker(*args: str, check: bool = True, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"docker {' '.join(args)}: {proc.stdout[-2000:]}\n{proc.stderr[-3000:]}")
    return proc


def _daemon() -> bool:
    return shutil.which("docker") is not None and subprocess.run(
        ["docker", "info"], capture_output=True, timeout=60).returncode == 0


pytestmark = pytest.mark.skipif(not _daemon(), reason="no Docker daemon here (.ci/run starts one)")


@pytest.fixture(scope="module")
def image() -> str:
    if _docker("image", "inspect", BASE, check=False).returncode != 0:
        root = Path(tempfile.mkdtemp(prefix="hubproxy-base-"))
        try:
            subprocess.run(["debootstrap", "--variant=minbase", "--include=python3,python3-venv,ca-certificates",
                            "bookworm", str(root / "rootfs"), "http://deb.debian.org/debian"],
                           check=True, capture_output=True, timeout=900)
            if CA.exists():
                shutil.copy(CA, root / "rootfs" / "etc/ssl/certs/ca-certificates.crt")
            tar = subprocess.Popen(["tar", "-C", str(root / "rootfs"), "-c", "."], stdout=subprocess.PIPE)
            subprocess.run(["docker", "import", "--change", f"ENV PIP_CERT={CA}", "--change", f"ENV SSL_CERT_FILE={CA}",
                            "-", BASE], stdin=tar.stdout, check=True, capture_output=True, timeout=600)
            tar.wait()
        finally:
            shutil.rmtree(root, ignore_errors=True)
    _docker("build", "--build-arg", f"BASE={BASE}", "-t", "hubproxy:test", str(ROOT), timeout=1200)
    return "hubproxy:test"


def test_the_image_runs_read_only_under_an_arbitrary_uid(image: str, fakehub: FakeHub, tmp_path: Path) -> None:
    port, name = free_port(), f"hubproxy-test-{free_port()}"
    volume = name + "-data"
    _docker("volume", "create", volume)
    try:
        _docker("run", "-d", "--name", name, "--network", "host", "--read-only", "--tmpfs", "/tmp",
                "--user", "4242:0", "-v", f"{volume}:/data", "-e", f"HUBPROXY_PORT={port}",
                "-e", "HUBPROXY_HOST=127.0.0.1", "-e", f"HUBPROXY_UPSTREAM={fakehub.url}", image)
        url = f"http://127.0.0.1:{port}"
        assert wait_until(lambda: _up(url), timeout=60), _docker("logs", name, check=False).stderr[-3000:]
        code = ("import sys; from huggingface_hub import hf_hub_download; "
                "sys.stdout.write(open(hf_hub_download('alice/files', 'config.json'), 'rb').read().decode())")
        got = run_client("", client_env(url, tmp_path / "hf"), args=["python", "-c", code]).stdout
        assert got.encode() == odd_files()["config.json"]
        health = lambda: _docker("inspect", "--format", "{{.State.Health.Status}}", name).stdout.strip()  # noqa: E731
        assert wait_until(lambda: health() == "healthy", timeout=90), health()
        started = time.monotonic()
        _docker("stop", "--time", "40", name)
        state = json.loads(_docker("inspect", "--format", "{{json .State}}", name).stdout)
        assert state["ExitCode"] == 0 and time.monotonic() - started < 40  # SIGTERM, drained, exited by itself
        assert "stopped" in _docker("logs", name).stdout + _docker("logs", name).stderr
    finally:
        _docker("rm", "-f", name, check=False)
        _docker("volume", "rm", volume, check=False)


def _up(url: str) -> bool:
    try:
        return request("GET", url + "/health", timeout=2)[0] == 200
    except OSError:
        return False
