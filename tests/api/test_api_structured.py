"""The structured schemes (issue 16) through a real server: listed in GET /v1/schemes, served as
files, and their stats carry the frame figures (coherence against the Welch bound)."""

from __future__ import annotations

import math

import httpx
import numpy as np
from safetensors.numpy import load

STRUCTURED = ("hadamard_orthogonal", "zero", "delta_orthogonal", "simplex_etf", "near_etf", "haar_wavelet", "dct")


def test_every_structured_scheme_is_listed_with_its_class(http: httpx.Client) -> None:
    catalog = {entry["name"]: entry for entry in http.get("/v1/schemes").json()}
    for name in STRUCTURED:
        assert name in catalog, name
        page = http.get(f"/v1/schemes/{name}").json()
        assert page["formula"] and page["reproducibility"] in ("bitwise", "numerical")


def test_a_structured_tensor_and_its_frame_stats(http: httpx.Client) -> None:
    spec = {"shape": [48, 12], "scheme": "near_etf", "seed": 3, "name": "fc.weight", "dtype": "float64"}
    weight = load(http.post("/v1/init", json=spec).content)["fc.weight"]
    assert np.allclose(np.linalg.norm(weight, axis=1), 1.0, rtol=1e-14, atol=0)
    frame = http.post("/v1/init?format=stats", json=spec).json()["frame"]
    assert frame["vectors"] == 48 and frame["dim"] == 12 and frame["exact"]
    assert frame["welch_bound"] == math.sqrt((48 - 12) / (12 * 47))
    assert frame["ratio"] <= 1.25
    bad = http.post("/v1/init", json={"shape": [4, 8, 3, 3], "scheme": "delta_orthogonal"})
    assert bad.status_code == 422 and "in channels ≤ out channels" in bad.text
