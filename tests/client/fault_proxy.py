"""A small asyncio TCP proxy on loopback that injects faults in front of a real server.

Per accepted connection, in order: the first ``drop_first`` are closed without an answer (the
client sees a dropped connection); the next ``reject_first`` get the request read and a
``503`` (or ``status``) with ``Retry-After`` and ``Connection: close``; the rest are piped to the
upstream server byte for byte — except that, while ``cuts`` remain, a connection that has sent
``cut_after`` bytes back is closed mid-body (a broken stream), and, while ``flips`` remain, the bit
``0x01`` of byte ``flip_at`` of a connection's answer (head included) is flipped in passing (data
corrupted in transit; a connection whose answer is shorter is left alone) — and with ``flip_every``
also bytes ``flip_at + k·flip_every`` (every response of a kept-alive connection is hit). It counts
connections, rejected requests and bytes sent back, and records when each connection arrived (to measure how long a
client waited between attempts).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
import time


class FaultProxy:
    def __init__(
        self,
        upstream_port: int,
        *,
        drop_first: int = 0,
        reject_first: int = 0,
        status: int = 503,
        retry_after: str | None = "1",
        cut_after: int | None = None,
        cuts: int = 0,
        flip_at: int | None = None,
        flips: int = 0,
        flip_every: int | None = None,
    ) -> None:
        self.upstream_port = upstream_port
        self.drop_first = drop_first
        self.reject_first = reject_first
        self.status = status
        self.retry_after = retry_after
        self.cut_after = cut_after
        self.cuts_left = cuts
        self.flip_at = flip_at
        self.flips_left = flips
        self.flip_every = flip_every
        self.flipped = 0
        self.connections = 0
        self.rejected = 0
        self.bytes_to_client = 0
        self.arrivals: list[float] = []
        self.port = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: asyncio.Server | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="fault-proxy", daemon=True)
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("proxy did not start")

    def stop(self) -> None:
        loop = self._loop
        if loop is not None and loop.is_running():
            done = asyncio.run_coroutine_threadsafe(self._shutdown(), loop)
            with contextlib.suppress(Exception):
                done.result(10)
            loop.call_soon_threadsafe(loop.stop)
        if self._thread is not None:
            self._thread.join(10)

    async def _shutdown(self) -> None:
        """Close the listener and cancel open connections, so no task outlives the loop."""
        if self._server is not None:
            self._server.close()
        tasks = [task for task in asyncio.all_tasks() if task is not asyncio.current_task()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def reset_counts(self) -> None:
        self.connections = self.rejected = self.bytes_to_client = 0
        self.arrivals.clear()

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        self._server = loop.run_until_complete(asyncio.start_server(self._handle, "127.0.0.1", 0))
        self.port = self._server.sockets[0].getsockname()[1]
        self._ready.set()
        try:
            loop.run_forever()
        finally:
            self._server.close()
            loop.close()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        index = self.connections
        self.connections += 1
        self.arrivals.append(time.monotonic())
        try:
            if index < self.drop_first:
                return  # close without a word
            if index < self.drop_first + self.reject_first:
                await self._reject(reader, writer)
                return
            await self._pipe(reader, writer)
        finally:
            with contextlib.suppress(Exception):
                writer.close()
                await writer.wait_closed()

    async def _reject(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        length = 0
        for line in head.split(b"\r\n"):
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value.strip())
        if length:
            await reader.readexactly(length)
        self.rejected += 1
        body = json.dumps(
            {
                "type": "urn:initserve:problem:saturated",
                "title": "Saturated",
                "status": self.status,
                "detail": "test proxy: try again later",
            }
        ).encode()
        headers = [
            f"HTTP/1.1 {self.status} Service Unavailable",
            "Content-Type: application/problem+json",
            f"Content-Length: {len(body)}",
            "Connection: close",
        ]
        if self.retry_after is not None:
            headers.append(f"Retry-After: {self.retry_after}")
        writer.write(("\r\n".join(headers) + "\r\n\r\n").encode() + body)
        await writer.drain()

    def _flip(self, data: bytes, sent: int) -> bytes:
        """``data`` (bytes [sent, sent + len) of a connection's answer) with the planned bits flipped."""
        assert self.flip_at is not None
        corrupted = bytearray(data)
        position = self.flip_at
        while position < sent + len(data) and self.flips_left > 0:
            if position >= sent:
                corrupted[position - sent] ^= 0x01
                self.flips_left -= 1
                self.flipped += 1
            if self.flip_every is None:
                break
            position += self.flip_every
        return bytes(corrupted)

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream_port)

        async def copy(src: asyncio.StreamReader, dst: asyncio.StreamWriter, count: bool) -> None:
            sent = 0
            try:
                while data := await src.read(1 << 20):
                    if (
                        count
                        and self.cut_after is not None
                        and self.cuts_left > 0
                        and sent + len(data) > self.cut_after
                    ):
                        self.cuts_left -= 1
                        dst.write(data[: self.cut_after - sent])
                        self.bytes_to_client += self.cut_after - sent
                        await dst.drain()
                        dst.transport.abort()
                        up_writer.transport.abort()
                        return
                    if count and self.flip_at is not None and self.flips_left > 0:
                        data = self._flip(data, sent)
                    sent += len(data)
                    if count:
                        self.bytes_to_client += len(data)
                    dst.write(data)
                    await dst.drain()
            except (ConnectionError, asyncio.IncompleteReadError):
                pass
            finally:
                with contextlib.suppress(Exception):
                    dst.close()

        await asyncio.gather(copy(reader, up_writer, False), copy(up_reader, writer, True))
