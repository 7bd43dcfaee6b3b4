"""Algorithm versions over HTTP: the default is the newest; algorithm 1 keeps the first release's
URLs, ETags and bytes; the header, the metadata, the resolve answer and the stats say which."""

from __future__ import annotations

import base64
import hashlib
import json
import struct
from collections.abc import Callable
from typing import Any

import httpx
import numpy as np
from initserve.engine import ALGORITHM_VERSION, generate, parse_spec

from tests.live_server import LiveServer

LINEAR = {"shape": [64, 48], "scheme": "kaiming_uniform", "seed": 42, "name": "fc.weight"}
# The canonical JSON of LINEAR as the first release wrote it (docs/determinism.md §2, §9): no
# "algorithm" key. Its token and ETag follow from the documented formulas, computed here by hand.
FIRST_RELEASE_CANONICAL = (
    '{"dtype":"float32","layout":"torch","name":"fc.weight","params":{"a":0.0,"fan_in":48,"fan_out":64,'
    '"mode":"fan_in","nonlinearity":"leaky_relu"},"scheme":"kaiming_uniform","seed":42,"shape":[64,48]}'
)


def _token(canonical: str) -> str:
    return "t." + base64.urlsafe_b64encode(canonical.encode()).rstrip(b"=").decode()


def _etag(canonical: str, algorithm: int) -> str:
    return '"' + hashlib.sha256(f"initserve-algorithm-{algorithm}\n{canonical}".encode()).hexdigest() + '"'


def _metadata(body: bytes) -> dict[str, str]:
    (size,) = struct.unpack("<Q", body[:8])
    header: dict[str, Any] = json.loads(body[8 : 8 + size])
    metadata: dict[str, str] = header["__metadata__"]
    return metadata


def _tensor_bytes(body: bytes) -> bytes:
    (size,) = struct.unpack("<Q", body[:8])
    return body[8 + size :]


def test_first_release_url_keeps_its_etag_bytes_and_algorithm(http: httpx.Client) -> None:
    url = "/v1/tensors/" + _token(FIRST_RELEASE_CANONICAL)
    response = http.get(url)
    assert response.status_code == 200, response.text
    assert response.headers["etag"] == _etag(FIRST_RELEASE_CANONICAL, 1)
    assert response.headers["x-initserve-algorithm"] == "1"
    assert _metadata(response.content) == {"initserve.algorithm": "1", "initserve.spec": FIRST_RELEASE_CANONICAL}
    # POST with "algorithm": 1 names that very URL and ETag.
    posted = http.post("/v1/init", json={**LINEAR, "algorithm": 1})
    assert posted.headers["content-location"] == url
    assert posted.headers["etag"] == response.headers["etag"]
    assert posted.content == response.content


def test_default_is_the_newest_algorithm_with_the_same_tensor_bytes_for_other_schemes(http: httpx.Client) -> None:
    first = http.post("/v1/init", json={**LINEAR, "algorithm": 1})
    default = http.post("/v1/init", json=LINEAR)
    assert default.headers["x-initserve-algorithm"] == str(ALGORITHM_VERSION) == "2"
    canonical = _metadata(default.content)["initserve.spec"]
    assert json.loads(canonical) == {**json.loads(FIRST_RELEASE_CANONICAL), "algorithm": 2}
    assert default.headers["etag"] == _etag(canonical, 2) != first.headers["etag"]
    assert default.headers["content-location"] == "/v1/tensors/" + _token(canonical)
    assert _metadata(default.content)["initserve.algorithm"] == "2"
    assert _tensor_bytes(default.content) == _tensor_bytes(first.content)
    resolved = http.post("/v1/resolve", json={**LINEAR, "algorithm": 1}).json()
    assert resolved["algorithm"] == 1 and resolved["etag"] == first.headers["etag"]
    assert http.post("/v1/resolve", json=LINEAR).json()["algorithm"] == 2


def test_orthogonal_algorithms_are_selectable_and_say_their_class(http: httpx.Client) -> None:
    body = {"shape": [40, 72], "scheme": "orthogonal", "seed": 3, "dtype": "float64"}
    for version, cls in ((1, "numerical"), (2, "bitwise")):
        response = http.post("/v1/init", json={**body, "algorithm": version})
        assert response.headers["x-initserve-algorithm"] == str(version)
        values = np.frombuffer(_tensor_bytes(response.content), dtype="<f8").reshape(40, 72)
        assert np.abs(values @ values.T - np.eye(40)).max() < 1e-13
        stats = http.post("/v1/init?format=stats", json={**body, "algorithm": version}).json()
        assert (stats["algorithm"], stats["reproducibility"]) == (version, cls)
        assert stats["orthogonality"]["gram"] == "WWᵀ" and stats["orthogonality"]["max_abs_deviation"] < 1e-13
        assert (stats["fan_in"], stats["fan_out"]) == (72, 40)
    # Algorithm 2's bytes are the engine's, which the golden vectors pin.
    served = http.post("/v1/init", json=body).content
    assert _tensor_bytes(served) == generate(parse_spec(body)).tobytes()


def test_bundle_algorithm_applies_to_every_tensor(http: httpx.Client) -> None:
    tensors = {"w": {"shape": [8, 8], "scheme": "orthogonal"}, "b": {"shape": [8], "scheme": "zeros"}}
    first = http.post("/v1/bundle", json={"tensors": tensors, "seed": 1, "algorithm": 1})
    assert first.status_code == 200, first.text
    assert first.headers["x-initserve-algorithm"] == "1"
    assert "algorithm" not in json.loads(_metadata(first.content)["initserve.spec"])
    second = http.post("/v1/bundle", json={"tensors": tensors, "seed": 1})
    assert _metadata(second.content)["initserve.algorithm"] == "2"
    assert json.loads(_metadata(second.content)["initserve.spec"])["algorithm"] == 2
    again = http.get(second.headers["content-location"])
    assert again.content == second.content and again.headers["etag"] == second.headers["etag"]


def test_unknown_algorithm_is_a_422_naming_the_field(http: httpx.Client) -> None:
    for value in (3, 0, True, "2"):
        response = http.post("/v1/init", json={**LINEAR, "algorithm": value})
        assert response.status_code == 422, response.text
        locs = [error["loc"] for error in response.json()["errors"]]
        assert ["body", "algorithm"] in locs, locs
    # a token naming an unsupported version is refused the same way
    canonical = json.dumps({**json.loads(FIRST_RELEASE_CANONICAL), "algorithm": 9}, separators=(",", ":"))
    response = http.get("/v1/tensors/" + _token(canonical))
    assert response.status_code == 422
    assert ["path", "token", "algorithm"] in [error["loc"] for error in response.json()["errors"]]


def test_orthogonal_bytes_are_the_same_on_a_one_thread_numpy_server(
    http: httpx.Client, server_factory: Callable[..., LiveServer]
) -> None:
    # The default server runs the native kernel (when built) on every core; this one the numpy kernel on
    # one thread. Algorithm 2's orthogonal must not tell them apart (multi-panel, tall, wide, every dtype).
    small = server_factory(kernel="numpy", generation_threads="1")
    bodies = [
        {"shape": [130, 97], "scheme": "orthogonal", "seed": 21, "dtype": "float64"},
        {"shape": [40, 16, 3, 3], "scheme": "orthogonal", "seed": 22, "dtype": "bfloat16"},
        {"shape": [3, 3, 32, 70], "scheme": "orthogonal", "seed": 23, "layout": "keras", "dtype": "float16"},
    ]
    with small.client() as other:
        for body in bodies:
            first, second = http.post("/v1/init", json=body), other.post("/v1/init", json=body)
            assert first.status_code == second.status_code == 200
            assert first.content == second.content
            assert first.headers["etag"] == second.headers["etag"]
