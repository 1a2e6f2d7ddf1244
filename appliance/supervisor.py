"""The supervisor: one root nursery owns the HTTP server, the scanners, the
background work and the signal task, and drains them in order on shutdown.

Drain order (first SIGINT/SIGTERM): stop accepting HTTP and let in-flight
requests finish (long-polling claims return at once) → backend
``shutdown_prepare`` → background work gets the grace period, then is
cancelled → scanners cancelled → ``backend.close()``. A second signal cancels
everything at once.
"""

from __future__ import annotations

import logging
import os
import signal
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import trio
import trio_asyncio

from appliance import __version__
from appliance.backend import Backend, BackendEnv
from appliance.backend.plugins import Plugins, get_plugin_manager
from appliance.config import Config
from appliance.engine import Engine
from appliance.exit_codes import EXIT_ERROR, EXIT_FORCED, EXIT_OK, EXIT_USAGE
from appliance.http import create_app
from appliance.http.server import (
    HttpStats,
    Listener,
    ListenSettings,
    bind,
    default_max_connections,
)
from appliance.processes import inherited_socket, watch_parent
from appliance.service import Service

log = logging.getLogger("flowfabric")

BACKGROUND_LIMIT = 64


@dataclass(slots=True)
class Running:
    """Handed to ``task_status.started``: where we listen and how to stop."""

    binds: list[str]
    service: Service
    engine: Engine
    stop: Callable[[], None]
    http: HttpStats = field(default_factory=HttpStats)
    forced: bool = False
    events: list[str] = field(default_factory=list)


async def serve(config: Config, *, handle_signals: bool = True, plugins: Plugins | None = None,
                task_status: Any = trio.TASK_STATUS_IGNORED) -> int:
    """Run the appliance until drained; returns the process exit code. ``plugins``: the
    ones the CLI already discovered (else they are discovered here)."""
    if handle_signals:
        _exit_on_late_signals()
    plugins = plugins or get_plugin_manager(config.plugin_path)
    backend = plugins.make_backend(config.backend, config)
    # A taken port fails before migrating; a child of ``--processes`` inherits its socket.
    sock = inherited_socket() or bind(config.listen_host, config.listen_port)
    try:
        async with trio_asyncio.open_loop():
            await backend.prepare(BackendEnv(config.partitions, config.clock,
                                             config.retention_ms))
            try:
                return await _supervise(config, backend, sock, handle_signals, task_status)
            finally:
                with trio.CancelScope(shield=True):
                    await backend.close()
                    log.info("FlowFabric stopped")
    finally:
        sock.close()
        if handle_signals:
            # Python resets its signal handlers to the default while the interpreter
            # shuts down, so a signal then would kill the process (-15) instead of letting
            # it exit with its code. Nothing is left to stop: ignore them (an ignored
            # signal stays ignored through shutdown).
            for signum in (signal.SIGINT, signal.SIGTERM):
                signal.signal(signum, signal.SIG_IGN)


async def _supervise(config: Config, backend: Backend, sock: Any, handle_signals: bool,
                     task_status: Any) -> int:
    service = Service(backend, config)
    engine = Engine(backend, config.scanner_intervals_s, service.wake, config.clock.now_ms)
    stopping = trio.Event()

    def stop() -> None:
        if not stopping.is_set():
            stopping.set()
            service.work.close()

    async with trio.open_nursery() as root:
        running = Running([], service, engine, stop)
        if handle_signals:
            await root.start(_watch_signals, running, root.cancel_scope)
        root.start_soon(watch_parent, stop)  # a child of ``--processes``
        await root.start(backend.serve, service.work.notify)
        if "suspend" in backend.capabilities():
            await service.suspensions.start()
        scanners = trio.CancelScope()
        root.start_soon(_in_scope, scanners, engine.serve)
        async with trio.open_nursery() as background:
            service.background = Background(background)
            http_done = trio.Event()
            listener = _listener(service, config, backend, sock)
            running.http = listener.stats
            running.binds = await root.start(_serve_http, listener, stopping.wait, http_done)
            _log_startup(config, backend, engine, running.binds, listener)
            task_status.started(running)
            await http_done.wait()
            log.info("HTTP drained; preparing the backend for shutdown")
            await backend.shutdown_prepare(config.shutdown_grace_s)
            with trio.move_on_after(config.shutdown_grace_s) as waited:
                await service.background.wait_idle()
            if waited.cancelled_caught:
                log.warning("background work still running after %.1fs; cancelling it",
                            config.shutdown_grace_s)
            background.cancel_scope.cancel()
        scanners.cancel()
        root.cancel_scope.cancel()
    return EXIT_FORCED if running.forced else EXIT_OK


class Background:
    """Work that outlives a request, bounded so a burst cannot swamp the appliance."""

    def __init__(self, nursery: trio.Nursery) -> None:
        self._nursery = nursery
        self._limiter = trio.CapacityLimiter(BACKGROUND_LIMIT)
        self._idle = trio.Event()
        self._idle.set()
        self._active = 0

    def start_soon(self, fn: Callable[[], Awaitable[None]]) -> None:
        self._nursery.start_soon(self._run, fn)

    async def _run(self, fn: Callable[[], Awaitable[None]]) -> None:
        self._active += 1
        self._idle = trio.Event() if self._idle.is_set() else self._idle
        try:
            async with self._limiter:
                await fn()
        except Exception:
            log.exception("background task failed")
        finally:
            self._active -= 1
            if self._active == 0:
                self._idle.set()

    async def wait_idle(self) -> None:
        await self._idle.wait()


async def _in_scope(scope: trio.CancelScope, fn: Callable[[], Awaitable[None]]) -> None:
    with scope:
        await fn()


def _listener(service: Service, config: Config, backend: Backend, sock: Any) -> Listener:
    cap = config.max_connections or default_max_connections(backend.store_connections)
    settings = ListenSettings(config.listen_host, config.listen_port, cap,
                              config.header_timeout_s, config.shutdown_grace_s)
    return Listener(create_app(service, config), settings, sock)


async def _serve_http(listener: Listener, trigger: Callable[[], Awaitable[None]],
                      done: trio.Event, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
    try:
        await listener.serve(trigger, task_status=task_status)
    finally:
        done.set()


async def _watch_signals(running: Running, root: trio.CancelScope, *,
                         task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        task_status.started()
        async for signum in signals:
            name = signal.Signals(signum).name
            if not running.events:
                running.events.append(name)
                log.info("%s received: draining (send it again to exit at once)", name)
                running.stop()
            else:
                log.warning("%s received again: exiting now", name)
                running.forced = True
                root.cancel()
                return


def _exit_on_late_signals() -> None:
    """SIGINT/SIGTERM outside the signal task's watch (after the drain, while the store
    closes) exit at once with the forced-exit code, not with the default disposition
    (killed by the signal) or a KeyboardInterrupt traceback."""
    def exit_now(signum: int, frame: object) -> None:
        os._exit(EXIT_FORCED)

    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, exit_now)


def _log_startup(config: Config, backend: Backend, engine: Engine, binds: list[str],
                 listener: Listener) -> None:
    parts = config.partitions
    scanners = ", ".join(f"{s.name} every {s.interval_s:g}s" for s in engine.specs) or "none"
    log.info("FlowFabric %s listening on %s", __version__, ", ".join(binds))
    log.info("HTTP: at most %d open connections (FF_MAX_CONNECTIONS), headers within %gs, "
             "bodies within %gs", listener.settings.max_connections,
             config.header_timeout_s, config.body_timeout_s)
    log.info("backend %s (%s); partitions flow=%d budget=%d quota=%d", backend.name,
             backend.describe(), parts.flow, parts.budget, parts.quota)
    log.info("scanners: %s", scanners)
    if not config.api_token:
        log.warning("FF_API_TOKEN is not set: the API is unauthenticated (listening on %s "
                    "only)%s", config.listen_host,
                    "" if not config.insecure else " and --insecure was given")


__all__ = ["EXIT_ERROR", "EXIT_FORCED", "EXIT_OK", "EXIT_USAGE", "Background", "Running",
           "serve"]
