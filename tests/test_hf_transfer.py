"""``hf_transfer`` (huggingface_hub 0.36, ``HF_HUB_ENABLE_HF_TRANSFER=1``) through hubproxy, cold and hot.

hf_transfer asks for ``bytes=0-0`` to learn the size, then for every 10 MiB chunk of the file at once (up to
100 connections), each a closed range; the last chunk's end is the file's size, one past its last byte. On
a cold blob every one of those ranges joins the one fill. huggingface_hub 0.36 uses it only for files
above 50 MiB and afterwards checks nothing but the size, so hubproxy alone stands between a wrong upstream
byte and a wrong file on the client's disk.
"""

from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path

import pytest

from tests.clients import client_python
from tests.fakehub import FakeHub
from tests.helpers import (
    ClientResult,
    ProxyProcess,
    client_env,
    request,
    run_client,
    scrape,
    value,
    wait_until,
)

MIB = 1024 * 1024
#: Above huggingface_hub 0.36's threshold for hf_transfer (five of its 10 MiB chunks), and not a multiple of them.
SIZE = 52 * MIB + 12345
#: Prints the sha256 of the file the client ends with, then the URL of each call to hf_transfer.
DOWNLOAD = """
import hashlib, sys
import hf_transfer
from huggingface_hub import hf_hub_download
calls = []
real = hf_transfer.download
def counted(*args, **kwargs):
    calls.append(kwargs.get("url"))
    return real(*args, **kwargs)
hf_transfer.download = counted
path = hf_hub_download(sys.argv[1], sys.argv[2])
with open(path, "rb") as f:
    print(hashlib.sha256(f.read()).hexdigest(), *calls)
"""


def _hf_transfer(endpoint: str, home: Path, repo: str, check: bool = True) -> ClientResult:
    """Download ``big.safetensors`` of ``repo`` in a fresh huggingface_hub 0.36 process with hf_transfer on."""
    python = client_python("huggingface_hub==0.36.2", "hf_transfer")
    env = client_env(endpoint, home, HF_HUB_ENABLE_HF_TRANSFER="1")
    return run_client("", env, args=[str(python), "-c", DOWNLOAD, repo, "big.safetensors"], check=check)


def _through_hf_transfer(result: ClientResult) -> tuple[str, list[str]]:
    """The sha256 of the downloaded file and the URLs hf_transfer was called with."""
    digest, *urls = result.stdout.split()
    return digest, urls


def _blob(hub: FakeHub, name: str) -> tuple[bytes, str]:
    data = os.urandom(SIZE)
    hub.add_commit("model", f"alice/{name}", {"big.safetensors": data})
    return data, hashlib.sha256(data).hexdigest()


@pytest.mark.parametrize("workers", [1, 2])
def test_hf_transfer_cold_then_hot(make_proxy, fakehub: FakeHub, tmp_path: Path, workers: int) -> None:  # noqa: ANN001
    """Every chunk of a cold download joins one upstream fetch, also where the chunks reach two worker
    processes (the one not filling answers from the parts the filler shares); the hot one asks the upstream for
    nothing."""
    proxy = make_proxy(workers=str(workers))
    _, sha = _blob(fakehub, f"hft{workers}")
    fakehub.faults.trickle[sha] = (1024 * 1024, 0.02)  # about 50 MB/s a connection: the chunks overlap the fill
    fakehub.reset_counts()
    digest, urls = _through_hf_transfer(_hf_transfer(proxy.url, tmp_path / "cold", f"alice/hft{workers}"))
    assert digest == sha and len(urls) == 1 and urls[0].startswith(proxy.url)  # through hf_transfer, right bytes
    assert fakehub.blob_bytes[sha] <= 1.02 * SIZE  # one fetch for every chunk of the client
    fakehub.reset_counts()
    assert _through_hf_transfer(_hf_transfer(proxy.url, tmp_path / "hot", f"alice/hft{workers}"))[0] == sha
    assert fakehub.count(contains=sha) == 0


def test_hf_transfer_never_keeps_a_wrong_file(proxy: ProxyProcess, fakehub: FakeHub, tmp_path: Path) -> None:
    """A fill that fails verification fails the hf_transfer download, which keeps nothing, and hf_transfer's
    closed ranges stay refused (so it cannot assemble the failed fill's chunks with good ones); a whole
    download gets the right file once the upstream sends it."""
    data, sha = _blob(fakehub, "hft-bad")
    fakehub.faults.corrupt.add(sha)  # the middle byte, every time
    for attempt in ("first", "again"):  # the second may meet the wait before a third fill (a 502)
        result = _hf_transfer(proxy.url, tmp_path / attempt, "alice/hft-bad", check=False)
        assert result.returncode != 0
        kept = [p for p in (tmp_path / attempt).rglob("*") if p.is_file() and p.stat().st_size == SIZE]
        assert kept == []  # neither the file nor a full-size .incomplete one
    assert not (proxy.data_dir / "blobs" / sha[:2] / sha).exists()
    fakehub.faults.corrupt.discard(sha)
    # A fill an attempt started may still be running on the wrong bytes: the next one gets the right ones.
    assert wait_until(lambda: value(scrape(proxy.url), "hubproxy_fills_in_flight") == 0, timeout=30)
    # Each attempt may have started more than one fill (its whole GET, its first chunk's retries), so the wait
    # before the next fill may have grown past the two seconds ``get_after_refill_wait`` allows for.
    deadline = time.monotonic() + 60
    while (answer := request("GET", proxy.url + "/alice/hft-bad/resolve/main/big.safetensors"))[0] == 502:
        assert answer[1]["x-error-code"] == "UpstreamError" and time.monotonic() < deadline
        time.sleep(min(int(answer[1]["retry-after"]), 10))
    assert answer[0] == 200 and answer[2] == data
    result = _hf_transfer(proxy.url, tmp_path / "later", "alice/hft-bad", check=False)
    assert result.returncode != 0 and "503" in result.stderr  # still inside the window of refused ranges


def test_hf_transfer_follows_the_s3_redirect(make_proxy, fakehub: FakeHub, s3_endpoint: str, bucket,  # noqa: ANN001
                                             tmp_path: Path) -> None:
    """With ``s3_redirect``, a stored blob's chunks come from the bucket through the presigned URL."""
    name, client = bucket
    proxy = make_proxy(store="s3", s3_bucket=name, s3_endpoint_url=s3_endpoint, s3_region="us-east-1",
                       s3_path_style="true", s3_redirect="true")
    _, sha = _blob(fakehub, "hft-s3")
    digest, urls = _through_hf_transfer(_hf_transfer(proxy.url, tmp_path / "cold", "alice/hft-s3"))
    assert digest == sha and urls[0].startswith(proxy.url)  # cold: streamed by hubproxy as it fills
    key = f"hubproxy/blobs/{sha[:2]}/{sha}"
    assert wait_until(lambda: client.list_objects_v2(Bucket=name, Prefix=key).get("KeyCount", 0) == 1, timeout=30)
    fakehub.reset_counts()
    digest, urls = _through_hf_transfer(_hf_transfer(proxy.url, tmp_path / "hot", "alice/hft-s3"))
    assert digest == sha and urls[0].startswith(f"{s3_endpoint}/{name}/{key}?")
    assert fakehub.count(contains=sha) == 0
