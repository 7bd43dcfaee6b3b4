"""``LocalClient``: :class:`Client`'s methods, generated in this process by the engine the server runs.

The engine (``initserve.engine``: numpy and the package's own kernel, no web framework) ships in the
same distribution as the client, so a local result is the server's result byte for byte: the same
spec parser, the same generator, the same safetensors writer. No request, no cache, no server.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from types import TracebackType
from typing import TYPE_CHECKING, Any

import numpy as np
from initserve.engine import DEFAULT_MAX_BYTES

from ._errors import InvalidSpecError, TooLargeError
from ._safetensors import SafetensorsFile, numpy_dtype, parse
from ._specs import DTypeLike, bundle_body, init_body, plain_spec
from ._tensor_view import tensor_as_numpy

if TYPE_CHECKING:
    import torch as pt
    from initserve.engine import BundleSpec, Spec, SpecError

__all__ = ["LocalClient"]

LOCAL_URL = "local:"


class LocalClient:
    """Generate deterministic initializations in-process; bit-identical to an initserve server.

    Args:
        threads: threads the engine uses per tensor (default: every core this process may use). Ranks
            sharing a machine each run their own LocalClient: give each ``cores // ranks``.
        kernel: ``"auto"`` (the compiled kernel when it was built, else numpy), ``"native"`` or
            ``"numpy"``; the bytes are the same (docs/determinism.md), only the speed differs.
        max_bytes: the largest result, in bytes, a call may produce (a tensor, a bundle's tensors together,
            a safetensors file's data, or the tensor :meth:`stats` describes); default 8 GiB, the server's
            ``INITSERVE_MAX_BYTES`` default. Checked on the spec by integer arithmetic before anything is
            allocated; beyond it :class:`TooLargeError` (413 ``too-large``, the server's message and
            ``loc``). ``None``: no limit but the engine's own (2^62 elements). :meth:`bundle_into`, and so
            ``init_module``'s in-place fill of CPU parameters, writes into memory the caller already holds
            and is not limited.

    Use it where every process needs its own weights and a server would only relay them (each rank of
    a large job computes its shard), offline, or to check a fetched tensor. Use :class:`Client` to
    share one generation between processes and machines (the service, its HTTP caches and the disk
    cache hold each file once) and where the engine's CPU time should not be spent on the caller.

    The ``threads - 1`` helper threads start on first use and serve every later call; :meth:`close`
    (or leaving a ``with`` block) stops them.

    Invalid specs raise :class:`InvalidSpecError` with the server's field errors and messages; results
    above ``max_bytes`` raise :class:`TooLargeError` as a server's 413 does.
    ``kernel="native"`` without the compiled extension raises ``initserve.engine.KernelUnavailable``.

    Example::

        local = LocalClient()
        w = local.tensor([256, 128], "kaiming_uniform", seed=42, name="fc.weight")
    """

    def __init__(
        self, *, threads: int | None = None, kernel: str = "auto", max_bytes: int | None = DEFAULT_MAX_BYTES
    ) -> None:
        from initserve.engine import resolve_kernel

        if threads is not None and threads < 1:
            raise ValueError(f"threads must be ≥ 1, got {threads}")
        if max_bytes is not None and (isinstance(max_bytes, bool) or not isinstance(max_bytes, int) or max_bytes < 1):
            raise ValueError(f"max_bytes must be an integer ≥ 1 (or None for no limit), got {max_bytes!r}")
        self.threads = threads
        self.max_bytes = max_bytes
        self._kernel = resolve_kernel(kernel)
        # The engine's helper threads, started once and reused by every call: init_module generates
        # one tensor (or shard) per call, and a pool started per call costs ~0.1 ms each time.
        self._pool: ThreadPoolExecutor | None = None
        self._pool_pid = 0  # a forked child has none of its parent's threads: it starts its own pool
        self._pool_lock = threading.Lock()

    @property
    def kernel(self) -> str:
        """The implementation of algorithm 1 in use: ``"native"`` or ``"numpy"``."""
        return str(self._kernel.name)

    # -- lifecycle ------------------------------------------------------------------------------------
    def close(self) -> None:
        """Stop the helper threads (started again if the client is used afterwards)."""
        with self._pool_lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=True)

    def __enter__(self) -> LocalClient:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # -- public API (the same signatures as Client) ---------------------------------------------------
    def tensor(
        self,
        shape: Sequence[int],
        scheme: str,
        *,
        seed: int | None = None,
        params: Mapping[str, Any] | None = None,
        dtype: DTypeLike = None,
        layout: str | None = None,
        name: str | None = None,
        slice: Sequence[Sequence[int]] | None = None,
        algorithm: int | None = None,
    ) -> np.ndarray[Any, Any]:
        """One tensor as a numpy array (bfloat16 needs ml_dtypes)."""
        body = init_body(
            shape,
            scheme,
            seed=seed,
            params=params,
            dtype=dtype,
            layout=layout,
            name=name,
            slice=slice,
            algorithm=algorithm,
        )
        array, st_dtype = self._generate(self._parse(body))
        return array.view(numpy_dtype(st_dtype))

    def torch(
        self,
        shape: Sequence[int],
        scheme: str,
        *,
        seed: int | None = None,
        params: Mapping[str, Any] | None = None,
        dtype: DTypeLike = None,
        layout: str | None = None,
        name: str | None = None,
        slice: Sequence[Sequence[int]] | None = None,
        algorithm: int | None = None,
        device: str | pt.device | None = None,
    ) -> pt.Tensor:
        """One tensor as a ``torch.Tensor`` of the exact dtype (bfloat16 without ml_dtypes)."""
        from ._torch import to_torch

        body = init_body(
            shape,
            scheme,
            seed=seed,
            params=params,
            dtype=dtype,
            layout=layout,
            name=name,
            slice=slice,
            algorithm=algorithm,
        )
        return to_torch(*self._generate(self._parse(body)), device=device)

    def bundle(
        self,
        tensors: Mapping[str, Mapping[str, Any]],
        *,
        seed: int | None = None,
        dtype: DTypeLike = None,
        layout: str | None = None,
        algorithm: int | None = None,
    ) -> dict[str, np.ndarray[Any, Any]]:
        """Many named tensors; each equals ``tensor()`` of its spec with that name (as ``/v1/bundle``)."""
        generated = self._bundle(bundle_body(tensors, seed=seed, dtype=dtype, layout=layout, algorithm=algorithm))
        return {name: array.view(numpy_dtype(st_dtype)) for name, (array, st_dtype) in generated.items()}

    def bundle_torch(
        self,
        tensors: Mapping[str, Mapping[str, Any]],
        *,
        seed: int | None = None,
        dtype: DTypeLike = None,
        layout: str | None = None,
        algorithm: int | None = None,
        device: str | pt.device | None = None,
    ) -> dict[str, pt.Tensor]:
        """:meth:`bundle` as torch tensors."""
        from ._torch import to_torch

        generated = self._bundle(bundle_body(tensors, seed=seed, dtype=dtype, layout=layout, algorithm=algorithm))
        return {name: to_torch(array, st_dtype, device=device) for name, (array, st_dtype) in generated.items()}

    def bundle_into(
        self,
        tensors: Mapping[str, Mapping[str, Any]],
        out: Mapping[str, Any],
        *,
        seed: int | None = None,
        dtype: DTypeLike = None,
        layout: str | None = None,
        algorithm: int | None = None,
    ) -> None:
        """Generate each tensor of a bundle straight into ``out[name]``, allocating nothing its size.

        ``out[name]``: a writable, C-contiguous numpy array or CPU ``torch.Tensor`` (a parameter's own
        storage, bfloat16 included) with the tensor's number of elements and its dtype. The values are
        :meth:`bundle`'s. Raises ``ValueError`` naming the tensor when a buffer is missing or does not fit.
        ``max_bytes`` does not apply: the memory is the caller's, already allocated."""
        bundle = _parse(bundle_body(tensors, seed=seed, dtype=dtype, layout=layout, algorithm=algorithm), None)
        from initserve.engine import BundleSpec, generate

        assert isinstance(bundle, BundleSpec)
        missing = [spec.name for spec in bundle.tensors if spec.name not in out]
        if missing:  # checked before any write, so a failed call leaves every buffer as it was
            raise ValueError(f"out has no buffer for {', '.join(map(repr, missing))} (one per tensor of the bundle)")
        for spec in bundle.tensors:
            target = _as_numpy(out[spec.name])
            try:
                generate(spec, kernel=self._kernel, threads=self.threads, out=target, executor=self._executor())
            except ValueError as exc:
                raise ValueError(f"out[{spec.name!r}]: {exc}") from None

    def stats(
        self,
        shape: Sequence[int],
        scheme: str,
        *,
        seed: int | None = None,
        params: Mapping[str, Any] | None = None,
        dtype: DTypeLike = None,
        layout: str | None = None,
        name: str | None = None,
        slice: Sequence[Sequence[int]] | None = None,
        algorithm: int | None = None,
    ) -> dict[str, Any]:
        """The statistics the server's ``?format=stats`` answers (computed without holding the tensor)."""
        body = init_body(
            shape,
            scheme,
            seed=seed,
            params=params,
            dtype=dtype,
            layout=layout,
            name=name,
            slice=slice,
            algorithm=algorithm,
        )
        return self.stats_of(body)

    def stats_of(self, spec: Mapping[str, Any]) -> dict[str, Any]:
        """:meth:`stats` for a ready-made spec mapping."""
        from initserve.engine import Spec, compute_stats

        parsed = self._parse(plain_spec(spec))
        if not isinstance(parsed, Spec):
            raise ValueError("stats describe one tensor; got a bundle (a mapping with 'tensors')")
        result: dict[str, Any] = compute_stats(parsed, kernel=self._kernel, threads=self.threads)
        return result

    def safetensors(self, spec: Mapping[str, Any]) -> SafetensorsFile:
        """The file the server would send for a spec, or a bundle (a mapping with ``tensors``), parsed.

        ``.buffer`` holds its bytes (identical to the server's); ``.array(name)`` gives writable views."""
        from initserve.engine import SafetensorsFile as EngineFile

        engine_file = EngineFile(self._parse(plain_spec(spec)))
        buffer = bytearray(engine_file.total_length)
        offset = 0
        for view in engine_file.iter_bytes(kernel=self._kernel, threads=self.threads):
            buffer[offset : offset + len(view)] = view
            offset += len(view)
        return parse(buffer)

    # -- generation -----------------------------------------------------------------------------------
    def _parse(self, body: Mapping[str, Any]) -> Spec | BundleSpec:
        """The canonical spec of a call that allocates its result: bounded by ``max_bytes``."""
        return _parse(body, self.max_bytes)

    def _generate(self, spec: Spec | BundleSpec) -> tuple[np.ndarray[Any, Any], str]:
        """The result in the engine's storage dtype (bfloat16 as uint16 bits) and its safetensors dtype:
        the bytes the server sends for this tensor, written straight into one array."""
        from initserve.engine import Spec, generate

        assert isinstance(spec, Spec)
        generated = generate(spec, kernel=self._kernel, threads=self.threads, executor=self._executor())
        return generated, spec.dtype_info.safetensors

    def _executor(self) -> ThreadPoolExecutor | None:
        """The pool of ``threads - 1`` helpers generate() runs beside the calling thread (None: one thread)."""
        from initserve.engine.generate import default_threads

        helpers = (self.threads or default_threads()) - 1
        if helpers < 1:
            return None
        with self._pool_lock:
            if self._pool is None or self._pool_pid != os.getpid():
                self._pool = ThreadPoolExecutor(max_workers=helpers, thread_name_prefix="initserve-local")
                self._pool_pid = os.getpid()
            return self._pool

    def _bundle(self, body: Mapping[str, Any]) -> dict[str, tuple[np.ndarray[Any, Any], str]]:
        from initserve.engine import BundleSpec

        bundle = self._parse(body)
        assert isinstance(bundle, BundleSpec)
        return {spec.name: self._generate(spec) for spec in bundle.tensors}

    def resolve(self, body: Mapping[str, Any]) -> dict[str, Any]:
        """What :meth:`Client.resolve` (``POST /v1/resolve``) answers that needs no server: the
        ``canonical`` spec (with the params the scheme uses: fans, gain), its ``algorithm`` and ``etag``
        (the spec digest, the server's ETag). No ``url``, ``token`` or ``content_length``: there is no
        server file. ``body``: a spec or ``{"bundle": ...}``, as for the server. Nothing is generated."""
        plain = plain_spec(body)
        parsed = _parse(plain.get("bundle", plain), None)
        return {"canonical": parsed.canonical(), "algorithm": parsed.algorithm, "etag": f'"{parsed.digest()}"'}

    def schemes(self) -> list[dict[str, Any]]:
        """The scheme catalog (what ``GET /v1/schemes`` lists)."""
        from initserve.engine import catalog

        return list(catalog())

    def scheme(self, name: str) -> dict[str, Any]:
        """One catalog entry; ``KeyError`` naming the known schemes if there is none."""
        from initserve.engine import catalog, scheme_info

        try:
            return dict(scheme_info(name))
        except KeyError:
            known = ", ".join(entry["name"] for entry in catalog())
            raise KeyError(f"unknown scheme {name!r}; known: {known}") from None


def _as_numpy(buffer: Any) -> np.ndarray[Any, Any]:
    """A numpy view of a numpy array or a CPU torch tensor (bfloat16 as its uint16 bits)."""
    if isinstance(buffer, np.ndarray):
        return buffer
    import torch

    if not isinstance(buffer, torch.Tensor) or buffer.device.type != "cpu":
        raise TypeError(f"expected a numpy array or a CPU torch.Tensor, got {type(buffer).__name__}")
    return tensor_as_numpy(buffer)  # not Tensor.numpy(): see _tensor_view


def _parse(body: Mapping[str, Any], max_bytes: int | None) -> Spec | BundleSpec:
    """The engine's canonical spec, at most ``max_bytes`` (None: unbounded) of result; its errors as the
    client's typed errors, worded as the server words them (locations under ``body``, as the request body
    a server would have been sent)."""
    from initserve.engine import SpecError, SpecTooLarge, parse_within

    try:
        return parse_within(body, max_bytes, bundle="tensors" in body)
    except SpecTooLarge as exc:
        hint = "; LocalClient(max_bytes=...) sets this limit" if exc.limit == max_bytes else ""
        raise _typed_error(exc, hint) from None
    except SpecError as exc:
        raise _typed_error(exc, "") from None


def _typed_error(exc: SpecError, hint: str) -> InvalidSpecError | TooLargeError:
    """The error a server answering with ``exc`` makes the client raise (413 for a size, else 422);
    ``hint`` ends each message."""
    from initserve.engine import SpecTooLarge, format_loc

    errors = [{"loc": ["body", *error.loc], "msg": error.msg + hint} for error in exc.errors]
    rendered = []
    for error in exc.errors:
        path = format_loc(error.loc) or "body"
        msg = error.msg + hint
        rendered.append(msg if msg.startswith(path) else f"{path}: {msg}")
    detail = "; ".join(rendered[:5]) or str(exc)
    too_large = isinstance(exc, SpecTooLarge)
    status, slug = (413, "too-large") if too_large else (422, "invalid-spec")
    problem = {"type": f"urn:initserve:problem:{slug}", "status": status, "detail": detail, "errors": errors}
    kind = TooLargeError if too_large else InvalidSpecError
    return kind(status, problem, method="LOCAL", url=LOCAL_URL)
