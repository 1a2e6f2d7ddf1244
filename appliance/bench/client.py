"""A small HTTP/1.1 client for the bench: keep-alive connections on raw Trio sockets.

A full client (httpx) spends about as much CPU per request as the appliance does,
on the same cores; this one parses only what the appliance sends (a status line,
headers, a ``content-length`` body), so the bench measures the server.
"""

from __future__ import annotations

from typing import Any

import msgspec
import trio

_encode = msgspec.json.Encoder().encode
_decode = msgspec.json.Decoder().decode


class Connection:
    def __init__(self, stream: trio.SocketStream, host: str, port: int,
                 token: str | None) -> None:
        self.stream = stream
        self.address = (host, port)
        self.host = host.encode()
        self.token = token
        self.buffer = bytearray()

    async def request(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        data = b"" if body is None else _encode(body)
        head = [f"{method} {path} HTTP/1.1".encode(), b"host: " + self.host,
                b"content-length: " + str(len(data)).encode()]
        if data:
            head.append(b"content-type: application/json")
        if self.token:
            head.append(b"authorization: Bearer " + self.token.encode())
        await self.stream.send_all(b"\r\n".join(head) + b"\r\n\r\n" + data)
        status, length, close = await self._head()
        while len(self.buffer) < length:
            chunk = await self.stream.receive_some(65536)
            if not chunk:
                raise ConnectionError("the appliance closed the connection")
            self.buffer += chunk
        raw = bytes(self.buffer[:length])
        del self.buffer[:length]
        if close:  # the appliance ends this connection: open the next one
            await self.stream.aclose()
            self.stream = await trio.open_tcp_stream(*self.address)
            self.buffer.clear()
        return status, (_decode(raw) if raw else None)

    async def _head(self) -> tuple[int, int, bool]:
        while (end := self.buffer.find(b"\r\n\r\n")) < 0:
            chunk = await self.stream.receive_some(65536)
            if not chunk:
                raise ConnectionError("the appliance closed the connection")
            self.buffer += chunk
        lines = bytes(self.buffer[:end]).split(b"\r\n")
        del self.buffer[:end + 4]
        status = int(lines[0].split(b" ", 2)[1])
        length, close = 0, False
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            name = name.strip().lower()
            if name == b"content-length":
                length = int(value)
            elif name == b"connection" and value.strip().lower() == b"close":
                close = True
        return status, length, close

    async def aclose(self) -> None:
        await self.stream.aclose()


class Client:
    """One keep-alive connection per concurrent user (a worker, a producer)."""

    def __init__(self, url: str, token: str | None = None) -> None:
        rest = url.removeprefix("http://").rstrip("/")
        self.host, _, port = rest.partition(":")
        self.port = int(port or 80)
        self.token = token

    async def connect(self) -> Connection:
        return Connection(await trio.open_tcp_stream(self.host, self.port), self.host,
                          self.port, self.token)
