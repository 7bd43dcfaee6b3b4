"""Issue #11, client side: corrupted bodies are never returned or cached, cache entries must match
their request, and failures of the disk or of odd headers are InitserveErrors that say what to do."""

from __future__ import annotations

import errno
import json
import shutil
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from initserve.cli import main as cli_main
from initserve_client import AsyncClient, CacheError, Client, IntegrityError
from initserve_client._flow import _cache_os_error
from initserve_client._retry import parse_retry_after

from tests.live_server import LiveServer as Server

from .fault_proxy import FaultProxy

BIG = {"shape": [4096, 1024], "scheme": "normal", "seed": 31, "name": "weight"}  # 16 MiB float32: streamed, one leaf
SMALL = {
    "shape": [64, 64],
    "scheme": "xavier_normal",
    "seed": 8,
    "name": "weight",
}  # 16 KiB: sent whole, with Repr-Digest


def reference(server: Server, spec: dict[str, object]) -> np.ndarray:
    with Client(base_url=server.url, cache=False) as client:
        return client.tensor(**spec).copy()  # type: ignore[arg-type]


def blobs(cache_dir: Path) -> list[Path]:
    folder = cache_dir / "v2" / "blobs"
    return sorted(folder.iterdir()) if folder.exists() else []


@pytest.mark.parametrize("cache", [True, False])
@pytest.mark.parametrize(("spec", "flip_at"), [(BIG, 3_000_000), (SMALL, 2_000)], ids=["16MiB", "16KiB"])
def test_one_flipped_bit_in_transit_is_caught_and_fetched_again(
    server: Server,
    proxy_factory: Callable[..., FaultProxy],
    isolated_env: Path,
    spec: dict[str, object],
    flip_at: int,
    cache: bool,
) -> None:
    good = reference(server, spec)
    proxy = proxy_factory(flip_at=flip_at, flips=1)
    with Client(base_url=proxy.url, cache=cache) as client:
        got = client.tensor(**spec)  # type: ignore[arg-type]
    assert proxy.flipped == 1, "the proxy did corrupt one answer"
    assert got.tobytes() == good.tobytes()
    if cache:
        with Client(base_url=server.url) as client:  # healthy fetches now hit the cache: it must hold good bytes
            assert client.tensor(**spec).tobytes() == good.tobytes()  # type: ignore[arg-type]


@pytest.mark.parametrize("cache", [True, False])
def test_a_body_corrupted_every_time_is_never_returned_or_cached(
    server: Server, proxy_factory: Callable[..., FaultProxy], isolated_env: Path, cache: bool
) -> None:
    proxy = proxy_factory(flip_at=3_000_000, flip_every=1 << 20, flips=1 << 20)
    # (a grid of flips every MiB could also hit a small JSON answer: that is an IntegrityError too)
    with Client(base_url=proxy.url, cache=cache, retries=1) as client, pytest.raises(IntegrityError):
        client.tensor(**BIG)  # type: ignore[arg-type]
    assert blobs(isolated_env) == []
    requests = isolated_env / "v2" / "index" / "requests"
    assert not requests.exists() or list(requests.iterdir()) == []


def test_the_async_client_verifies_too(
    server: Server, proxy_factory: Callable[..., FaultProxy], isolated_env: Path
) -> None:
    import asyncio

    good = reference(server, BIG)
    proxy = proxy_factory(flip_at=3_000_000, flips=1)

    async def fetch() -> np.ndarray:
        async with AsyncClient(base_url=proxy.url) as client:
            return await client.tensor(**BIG)  # type: ignore[arg-type]

    assert asyncio.run(fetch()).tobytes() == good.tobytes()
    assert proxy.flipped == 1


def test_a_request_entry_copied_from_another_tensor_is_not_used(server: Server, isolated_env: Path) -> None:
    with Client(base_url=server.url) as client:
        a = client.tensor([256, 256], "normal", seed=1, name="weight").copy()
        client.tensor([300, 100], "normal", seed=2, name="weight")
    requests = isolated_env / "v2" / "index" / "requests"
    entries = {json.loads(p.read_text())["tensors"]["weight"]["shape"][0]: p for p in requests.iterdir()}
    shutil.copyfile(entries[300], entries[256])  # tensor B's entry over tensor A's
    with Client(base_url=server.url) as client:
        again = client.tensor([256, 256], "normal", seed=1, name="weight")
    assert again.shape == (256, 256)
    assert again.tobytes() == a.tobytes()


def test_a_request_entry_rewritten_for_another_request_key_is_not_used(server: Server, isolated_env: Path) -> None:
    with Client(base_url=server.url) as client:
        a = client.tensor([8, 8], "normal", seed=1, name="weight").copy()
        client.tensor([8, 8], "normal", seed=2, name="weight")
    requests = isolated_env / "v2" / "index" / "requests"
    first, second = sorted(requests.iterdir(), key=lambda p: p.stat().st_mtime)
    data = json.loads(second.read_text())
    data["request_key"] = first.stem  # even with the key edited to match, the file's seed gives it away
    first.write_text(json.dumps(data))
    with Client(base_url=server.url) as client:
        assert client.tensor([8, 8], "normal", seed=1, name="weight").tobytes() == a.tobytes()


def test_cache_verify_against_the_server(
    server: Server, isolated_env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with Client(base_url=server.url) as client:
        client.tensor(**SMALL)  # type: ignore[arg-type]
        client.tensor([32, 32], "normal", seed=4, name="weight")
    # A blob that is intact on disk (its name is its tree hash) but is not what the server says the URL holds:
    etags = isolated_env / "v2" / "index" / "etags"
    one, other = sorted(etags.iterdir())
    forged = json.loads(one.read_text())
    forged["url"] = json.loads(other.read_text())["url"]
    one.write_text(json.dumps(forged))
    command = ["cache", "--cache-dir", str(isolated_env), "verify", "--server", "--url", server.url]
    code = cli_main(command)
    captured = capsys.readouterr()
    out = captured.out
    assert code == 1, captured.err
    assert "1 match, 1 differ" in out
    assert cli_main(command) == 0


def test_a_disk_that_fills_up_mid_write_is_a_cache_error(server: Server, tmp_path: Path) -> None:
    # RLIMIT_FSIZE makes the kernel refuse writes past 1 MiB (EFBIG), as a full disk refuses them (ENOSPC).
    script = textwrap.dedent(
        f"""
        import resource, signal, sys
        from initserve_client import CacheError, Client
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 20, 1 << 20))
        try:
            with Client(base_url={server.url!r}, cache_dir={str(tmp_path / "c")!r}) as client:
                client.tensor(**{BIG!r})
        except CacheError as exc:
            print("CacheError:", exc)
            sys.exit(0)
        sys.exit(3)
        """
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "cannot write to the cache" in done.stdout and "INITSERVE_CACHE_DIR" in done.stdout


@pytest.mark.parametrize(
    ("code", "words"),
    [(errno.ENOSPC, "disk is full"), (errno.EROFS, "not writable"), (errno.EACCES, "not writable")],
)
def test_cache_os_errors_say_what_to_do(tmp_path: Path, code: int, words: str) -> None:
    from initserve_client._cache import Cache

    error = _cache_os_error(Cache(tmp_path), OSError(code, "boom"))
    assert isinstance(error, CacheError)
    assert words in str(error) and "cache=False" in str(error)


def test_a_read_only_cache_dir_is_a_cache_error(server: Server, tmp_path: Path) -> None:
    root = tmp_path / "ro"
    root.mkdir()
    (root / "v2").write_text("not a directory")  # unwritable layout even for root
    with Client(base_url=server.url, cache_dir=root) as client, pytest.raises(CacheError, match="cache"):
        client.tensor([4], "ones", name="weight")


@pytest.mark.parametrize("value", ["²", "٣", "1.5", "-1", "soon"])
def test_odd_retry_after_values_fall_back_to_backoff(value: str) -> None:
    assert parse_retry_after(value) is None


def test_retry_after_superscript_two_is_retried_not_raised(
    server: Server, proxy_factory: Callable[..., FaultProxy]
) -> None:
    proxy = proxy_factory(reject_first=1, retry_after="²")
    with Client(base_url=proxy.url, cache=False) as client:
        assert client.tensor([4], "ones", name="weight").tolist() == [1.0] * 4
    assert proxy.rejected == 1
