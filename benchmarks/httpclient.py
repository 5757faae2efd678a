"""A small keep-alive HTTP/1.1 client on asyncio streams, for the benchmark's scenario drivers.

httpx costs about a millisecond of CPU per request, which on a 2-core machine is taken straight
from the server being measured; this client costs a few tens of microseconds. It speaks just what
the benchmark needs: one request at a time per connection, `Content-Length` or chunked answers.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from typing import Any


class HttpError(RuntimeError):
    """The connection broke or the answer was not HTTP."""


class Connection:
    """One keep-alive connection to `host:port`; reconnects once if the server closed it."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def _connect(self) -> None:
        self._reader, self._writer = await asyncio.open_connection(self.host, self.port)

    async def close(self) -> None:
        """Close the connection (safe to call twice)."""
        if self._writer is not None:
            self._writer.close()
            with contextlib.suppress(ConnectionError, OSError):
                await self._writer.wait_closed()
        self._reader = self._writer = None

    async def request(
        self, method: str, path: str, body: bytes = b"", headers: dict[str, str] | None = None
    ) -> tuple[int, bytes]:
        """Send one request and return (status, body)."""
        head = f"{method} {path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\nContent-Length: {len(body)}\r\n"
        if body:
            head += "Content-Type: application/json\r\n"
        for name, value in (headers or {}).items():
            head += f"{name}: {value}\r\n"
        raw = head.encode() + b"\r\n" + body
        for attempt in (1, 2):
            if self._writer is None:
                await self._connect()
            try:
                return await self._exchange(raw)
            except (ConnectionError, asyncio.IncompleteReadError, HttpError):
                await self.close()
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    async def _exchange(self, raw: bytes) -> tuple[int, bytes]:
        assert self._reader is not None and self._writer is not None
        self._writer.write(raw)
        head = await self._reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        parts = lines[0].split(" ", 2)
        if len(parts) < 2 or not parts[0].startswith("HTTP/1."):
            raise HttpError(f"not an HTTP answer: {lines[0]!r}")
        status = int(parts[1])
        fields = {}
        for line in lines[1:]:
            name, sep, value = line.partition(":")
            if sep:
                fields[name.strip().lower()] = value.strip()
        if "content-length" in fields:
            data = await self._reader.readexactly(int(fields["content-length"]))
        elif fields.get("transfer-encoding", "").lower() == "chunked":
            data = await self._chunked()
        else:
            data = await self._reader.read()
        if fields.get("connection", "").lower() == "close":
            await self.close()
        return status, data

    async def _chunked(self) -> bytes:
        assert self._reader is not None
        out = bytearray()
        while True:
            size = int((await self._reader.readuntil(b"\r\n")).split(b";")[0], 16)
            if size == 0:
                await self._reader.readuntil(b"\r\n")
                return bytes(out)
            out += await self._reader.readexactly(size)
            await self._reader.readexactly(2)

    async def json(self, method: str, path: str, payload: Any = None, headers: dict[str, str] | None = None) -> Any:
        """Send JSON (or nothing) and decode the JSON answer; raises HttpError on a non-2xx status."""
        body = b"" if payload is None else json.dumps(payload).encode()
        status, data = await self.request(method, path, body, headers)
        if not 200 <= status < 300:
            raise HttpError(f"{method} {path} answered {status}: {data[:300]!r}")
        return json.loads(data)
