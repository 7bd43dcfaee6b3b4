"""The S3 backend against a real S3-protocol server: moto in server mode, a separate process on a loopback
port, reached by boto3 over HTTP exactly as MinIO or AWS would be. Two initserve replicas share the bucket."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from safetensors.numpy import load, save

from tests.live_server import LiveServer, free_port

# Real models / a real S3 server: tens of seconds, so in the slow suite (CI runs both).
pytestmark = pytest.mark.slow

pytest.importorskip("boto3")
pytest.importorskip("moto")

CREDENTIALS = {"AWS_ACCESS_KEY_ID": "initserve-test", "AWS_SECRET_ACCESS_KEY": "initserve-test-secret"}


@pytest.fixture(scope="module")
def s3_endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    port = free_port()
    log = tmp_path_factory.mktemp("moto") / "moto.log"
    script = Path(sys.executable).with_name("moto_server")
    with log.open("wb") as sink:
        process = subprocess.Popen(
            [str(script), "-H", "127.0.0.1", "-p", str(port)],
            stdout=sink,
            stderr=subprocess.STDOUT,
            env={**os.environ, **CREDENTIALS},
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"moto_server exited: {log.read_text()}")
            try:
                httpx.get(url + "/moto-api/", timeout=1)
                break
            except httpx.TransportError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"moto_server did not start: {log.read_text()}") from None
                time.sleep(0.1)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=15)


@pytest.fixture(scope="module")
def replicas(server_factory: Callable[..., LiveServer], s3_endpoint: str, monkeypatch_module: None) -> list[LiveServer]:
    settings = {"store": "s3://initserve-test/ckpt", "store_endpoint_url": s3_endpoint, "store_region": "us-east-1"}
    return [server_factory(**settings), server_factory(**settings)]


@pytest.fixture(scope="module")
def monkeypatch_module() -> Iterator[None]:
    """The servers inherit the environment: give them (and boto3 in this process) the test credentials."""
    saved = {name: os.environ.get(name) for name in CREDENTIALS}
    os.environ.update(CREDENTIALS)
    yield
    for name, value in saved.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


def _bucket_keys(endpoint: str) -> list[str]:
    import boto3

    client = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")
    pages = client.get_paginator("list_objects_v2").paginate(Bucket="initserve-test", Prefix="ckpt/")
    return sorted(item["Key"] for page in pages for item in page.get("Contents", []))


def test_upload_dedup_read_and_derive_through_an_s3_server(replicas: list[LiveServer], s3_endpoint: str) -> None:
    rng = np.random.default_rng(3)
    # 12 MiB: larger than one 8 MiB part, so it takes the multipart upload + server-side copy path.
    state = {"big": rng.standard_normal((3 << 20,)).astype(np.float32), "small": np.arange(10, dtype=np.float32)}
    file = save(state)
    first, second = replicas
    with first.client() as a, second.client() as b:
        created = a.post("/v1/checkpoints", content=file)
        assert created.status_code == 201, created.text
        manifest = created.json()
        keys = _bucket_keys(s3_endpoint)
        assert sum(k.startswith("ckpt/blobs/") for k in keys) == 2
        assert not [k for k in keys if k.startswith("ckpt/tmp/")]
        # The other replica sees the same store: the same upload stores nothing new.
        again = b.post("/v1/checkpoints", content=file)
        assert again.status_code == 200 and again.json()["stored"] == {"new_tensors": 0, "new_bytes": 0}
        assert _bucket_keys(s3_endpoint) == keys
        url = f"/v1/checkpoints/{manifest['digest']}/tensors/big"
        whole = b.get(url)
        assert load(whole.content)["big"].tobytes() == state["big"].tobytes()
        part = a.get(url, headers={"Range": "bytes=1000-1999999"})
        assert part.status_code == 206 and part.content == whole.content[1000:2000000]
        body = {
            "source": manifest["digest"],
            "target": {"seed": 1, "tensors": {"big": {"shape": [3 << 20]}, "small": {"shape": [12]}}},
            "rules": [{"match": "small", "action": "mean_rows", "noise": 0.5}],
        }
        derived_a, derived_b = a.post("/v1/derive", json=body), b.post("/v1/derive", json=body)
        assert derived_a.status_code == 200, derived_a.text
        assert derived_a.content == derived_b.content
        out = load(derived_a.content)
        assert out["big"].tobytes() == state["big"].tobytes()
        assert out["small"][:10].tobytes() == state["small"].tobytes()


def test_a_garbled_object_is_refused_when_derive_reads_it(replicas: list[LiveServer], s3_endpoint: str) -> None:
    import boto3

    state = {"w": np.full(16, 2.5, dtype=np.float32)}
    with replicas[0].client() as client:
        manifest = client.post("/v1/checkpoints", content=save(state)).json()
        digest = manifest["tensors"]["w"]["digest"]
        s3 = boto3.client("s3", endpoint_url=s3_endpoint, region_name="us-east-1")
        s3.put_object(Bucket="initserve-test", Key=f"ckpt/blobs/{digest}", Body=b"not the bytes")
        body = {"source": manifest["digest"], "target": {"tensors": {"w": {"shape": [16]}}}, "rules": []}
        with pytest.raises(httpx.HTTPError):  # the stream is cut: a client never receives unverified bytes whole
            response = client.post("/v1/derive", json=body)
            response.raise_for_status()
            load(response.content)
