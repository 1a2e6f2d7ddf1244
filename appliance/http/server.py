"""The HTTP listener: hypercorn's protocol code under our own accept loop.

``hypercorn.trio.serve`` runs every connection in one nursery with the accept
loop, so an exception that escapes one connection ends the whole server; it
takes connections without limit, and its default listen backlog of 100 makes
each new connection cost about 5 ms on Linux once more than that many are
open. Here each connection is a task whose failure ends that connection only
(logged and counted); connections past ``max_connections`` get a prompt
``503 overloaded``; ``accept`` failing for lack of file descriptors backs off
instead of spinning. The protocol work (h11, h2, ASGI) stays hypercorn's.
"""

from __future__ import annotations

import errno
import logging
import socket
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

import h11
import trio
from hypercorn.config import Config as HypercornConfig
from hypercorn.events import Closed
from hypercorn.protocol.h11 import H11Protocol
from hypercorn.trio.lifespan import Lifespan
from hypercorn.trio.tcp_server import TCPServer
from hypercorn.trio.worker_context import WorkerContext
from hypercorn.typing import ConnectionState
from hypercorn.utils import wrap_app

from appliance.core.errors import StartupError

log = logging.getLogger("flowfabric.http")

#: The listen backlog. Far above hypercorn's 100, which slows every connect (about 5 ms
#: each on Linux) once that many connections are open; the kernel caps it at somaxconn.
BACKLOG = 4096
#: Connections past the cap that may be answered 503 at the same time; more are closed.
REJECT_SLOTS = 64
REJECT_TIMEOUT_S = 1.0
#: accept() failing for lack of resources: back off from the first to the last delay.
ACCEPT_BACKOFF_S = (0.01, 0.5)
ACCEPT_OUT_OF_RESOURCES = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})
#: Descriptors kept free for everything but HTTP connections (store connections, the
#: SQLite files, logs, the listener, 503 answers).
FD_HEADROOM = 256
LOG_EVERY_S = 10.0

OVERLOADED = (b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n"
              b"retry-after: 1\r\nconnection: close\r\ncontent-length: %d\r\n\r\n%s")
OVERLOADED_BODY = (b'{"error":"the appliance has too many open connections (FF_MAX_CONNECTIONS);'
                   b' retry shortly","kind":"overloaded","retryable":true}')


@dataclass(slots=True)
class HttpStats:
    """Counters of the listener, for the log and (later) /metrics."""

    open: int = 0
    accepted: int = 0
    rejected: int = 0
    failed: int = 0
    accept_errors: int = 0


@dataclass(frozen=True, slots=True)
class ListenSettings:
    host: str
    port: int
    max_connections: int
    header_timeout_s: float
    graceful_timeout_s: float


def default_max_connections(store_connections: int = 0) -> int:
    """Open connections the descriptor limit allows, with headroom for everything else."""
    soft = raise_fd_limit()
    return max(16, soft - FD_HEADROOM - store_connections)


def raise_fd_limit() -> int:
    """Raise the soft limit on open files to the hard limit (as Go and nginx do); the
    resulting soft limit."""
    try:
        import resource
    except ImportError:  # not a POSIX system
        return 1024
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):
            pass
    return soft if soft != resource.RLIM_INFINITY else 1 << 20


def bind(host: str, port: int, setting: str = "FF_LISTEN_ADDR / --listen") -> socket.socket:
    """A listening socket, or a StartupError that names the address and the setting."""
    where = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise StartupError(f"cannot listen on {where}: the host does not resolve "
                           f"({exc.strerror}); set {setting} to an address of this "
                           f"machine") from None
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(BACKLOG)
    except OSError as exc:
        sock.close()
        why = {errno.EADDRINUSE: "the address is already in use (another FlowFabric, or "
                                 "another program, listens there); stop it or choose "
                                 "another port",
               errno.EACCES: "permission denied (ports below 1024 need privileges); choose "
                             "a port above 1023",
               errno.EADDRNOTAVAIL: "that address does not belong to this machine; use "
                                    "127.0.0.1 or one of its own addresses"}.get(
                   exc.errno, exc.strerror or str(exc))
        raise StartupError(f"cannot listen on {where}: {why} ({setting})") from None
    return sock


MALFORMED_BODY = (b'{"error":"the request is not valid HTTP/1.1 (framing, headers or version); '
                  b'nothing was done","kind":"malformed_request","retryable":false}')


class _Connection(TCPServer):
    """hypercorn's connection: malformed requests get a JSON 4xx, and the socket is
    closed as soon as the peer is gone."""

    async def protocol_send(self, event: Any) -> None:
        try:
            await super().protocol_send(event)
        except trio.BusyResourceError:
            # Only ever while _close is shutting the socket down: the connection is over.
            await self.protocol.handle(Closed())

    async def _read_data(self) -> None:
        inner = self.protocol.protocol
        if isinstance(inner, H11Protocol):
            inner._send_error_response = partial(_malformed, inner)  # type: ignore[method-assign]
        await super()._read_data()
        # The peer closed: nothing to keep alive for (hypercorn would hold the socket
        # until its keep-alive timer ran out).
        await self.idle_task.stop()


async def _malformed(protocol: H11Protocol, status_hint: int) -> None:
    """h11 refused the bytes: answer 4xx with JSON. h11 hints 501 and 505 for transfer
    codings and versions it does not speak, but the fault is the client's: 400."""
    status = status_hint if 400 <= status_hint < 500 else 400
    headers = [(b"content-type", b"application/json"), (b"connection", b"close"),
               (b"content-length", b"%d" % len(MALFORMED_BODY))]
    await protocol._send_h11_event(h11.Response(status_code=status, headers=headers))
    await protocol._send_h11_event(h11.Data(data=MALFORMED_BODY))
    await protocol._send_h11_event(h11.EndOfMessage())


class Listener:
    """Serves one listening socket: accepts, caps, and isolates connections."""

    def __init__(self, app: Any, settings: ListenSettings, sock: socket.socket) -> None:
        self.settings = settings
        self.stats = HttpStats()
        self.config = _hypercorn_config(settings)
        self.app = wrap_app(app, self.config.wsgi_max_body_size, "asgi")
        self.context = WorkerContext(None)
        self.state: dict[str, Any] = {}
        self.sock = sock
        self._rejecting = 0
        self._last_log: dict[str, float] = {}
        self._suppressed: dict[str, int] = {}

    @property
    def url(self) -> str:
        host, port = self.sock.getsockname()[:2]
        return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"

    async def serve(self, shutdown_trigger: Callable[[], Awaitable[None]], *,
                    task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        """Serve until ``shutdown_trigger`` returns, then give open requests the grace."""
        lifespan = Lifespan(self.app, self.config, self.state)
        async with trio.open_nursery() as lifespan_nursery:
            await lifespan_nursery.start(lifespan.handle_lifespan)
            await lifespan.wait_for_startup()
            async with trio.open_nursery() as connections:
                listener = trio.SocketListener(trio.socket.from_stdlib_socket(self.sock))
                async with trio.open_nursery() as accepting:
                    accepting.start_soon(self._accept_loop, listener, connections)
                    task_status.started([self.url])
                    await shutdown_trigger()
                    accepting.cancel_scope.cancel()
                await listener.aclose()
                await self.context.terminated.set()  # idle keep-alive connections close
                connections.cancel_scope.deadline = (trio.current_time()
                                                     + self.settings.graceful_timeout_s)
            await lifespan.wait_for_shutdown()
            lifespan_nursery.cancel_scope.cancel()

    async def _accept_loop(self, listener: trio.SocketListener, nursery: trio.Nursery) -> None:
        delay = ACCEPT_BACKOFF_S[0]
        while True:
            try:
                stream = await listener.accept()
            except OSError as exc:
                self.stats.accept_errors += 1
                if exc.errno not in ACCEPT_OUT_OF_RESOURCES:
                    self._log_limited("accept", "accept failed: %s; retrying", exc)
                    await trio.sleep(ACCEPT_BACKOFF_S[0])
                    continue
                self._log_limited("accept", "cannot accept connections: %s (%d open); "
                                  "lower FF_MAX_CONNECTIONS or raise the open-files limit "
                                  "(ulimit -n)", exc.strerror, self.stats.open)
                await trio.sleep(delay)
                delay = min(delay * 2, ACCEPT_BACKOFF_S[1])
                continue
            delay = ACCEPT_BACKOFF_S[0]
            self.stats.accepted += 1
            if self.stats.open < self.settings.max_connections:
                self.stats.open += 1
                nursery.start_soon(self._serve_connection, stream)
            elif self._rejecting < REJECT_SLOTS:
                self._rejecting += 1
                nursery.start_soon(self._reject, stream)
            else:
                self.stats.rejected += 1
                stream.socket.close()

    async def _serve_connection(self, stream: trio.SocketStream) -> None:
        try:
            await _Connection(self.app, self.config, self.context,  # type: ignore[arg-type]
                              ConnectionState(self.state.copy()), stream)
        except* Exception as group:  # one connection's trouble ends that connection only
            self.stats.failed += 1
            self._log_limited("connection", "an HTTP connection failed and was closed: %r",
                              _first_leaf(group), exc_info=group)
        finally:
            self.stats.open -= 1
            with trio.CancelScope(shield=True):
                await stream.aclose()

    async def _reject(self, stream: trio.SocketStream) -> None:
        """Past the cap: answer 503 at once, then let the client's request drain away."""
        self.stats.rejected += 1
        try:
            with trio.move_on_after(REJECT_TIMEOUT_S):
                await stream.send_all(OVERLOADED % (len(OVERLOADED_BODY), OVERLOADED_BODY))
                await stream.send_eof()
                while await stream.receive_some(65536):
                    pass
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            pass
        finally:
            self._rejecting -= 1
            with trio.CancelScope(shield=True):
                await stream.aclose()

    def _log_limited(self, key: str, message: str, *args: Any, exc_info: Any = None) -> None:
        """Log at most once per LOG_EVERY_S per key, saying how many were held back."""
        now = time.monotonic()
        if now - self._last_log.get(key, -LOG_EVERY_S) < LOG_EVERY_S:
            self._suppressed[key] = self._suppressed.get(key, 0) + 1
            return
        held = self._suppressed.pop(key, 0)
        self._last_log[key] = now
        suffix = f" ({held} more like this in the last {LOG_EVERY_S:g}s)" if held else ""
        log.error(message + suffix, *args, exc_info=exc_info)


def _first_leaf(error: BaseException) -> BaseException:
    while isinstance(error, BaseExceptionGroup):
        error = error.exceptions[0]
    return error


def _hypercorn_config(settings: ListenSettings) -> HypercornConfig:
    cfg = HypercornConfig()
    cfg.accesslog = None
    cfg.errorlog = logging.getLogger("flowfabric.http")
    cfg.include_server_header = False
    cfg.graceful_timeout = settings.graceful_timeout_s
    # hypercorn's idle timer runs from the connection's start (and after each response)
    # until a request's headers are complete: a header timeout and a keep-alive timeout.
    cfg.keep_alive_timeout = settings.header_timeout_s
    # hypercorn closes a keep-alive connection after 1,000 requests by default; a worker's
    # connection lives as long as the worker does.
    cfg.keep_alive_max_requests = 2**62
    return cfg


__all__ = ["HttpStats", "ListenSettings", "Listener", "bind", "default_max_connections"]
