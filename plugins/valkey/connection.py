"""The asyncio client seen from Trio: every call, pipeline and FCALL goes through here, so
"the store went away" becomes ``StoreUnavailable`` in exactly one place."""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable
from typing import Any

import trio
import trio_asyncio
from redis import exceptions as rx
from redis.asyncio import Redis
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from appliance.core.errors import StoreUnavailable

from . import codec
from .settings import ValkeySettings

#: Errors after which the same request may succeed: the store is down, restarting,
#: loading its data, failing over or resharding.
STORE_DOWN: tuple[type[BaseException], ...] = (
    rx.ConnectionError, rx.TimeoutError, rx.ClusterDownError, rx.TryAgainError,
    rx.MasterDownError, rx.ReadOnlyError, rx.RedisClusterException, OSError, TimeoutError)

FUNCTION_MISSING = ("function not found", "no matching function", "function not loaded",
                    "noscript")

SOCKET_TIMEOUT_S = 10.0
CONNECT_TIMEOUT_S = 5.0


def function_missing(exc: BaseException) -> bool:
    return isinstance(exc, rx.ResponseError) and any(
        text in str(exc).lower() for text in FUNCTION_MISSING)


def make_client(settings: ValkeySettings) -> Redis | RedisCluster:
    """No client-side retries: a write replayed after a lost reply could apply twice, so a
    failed call is answered as retryable and the caller decides."""
    common: dict[str, Any] = {"socket_timeout": SOCKET_TIMEOUT_S,
                              "socket_connect_timeout": CONNECT_TIMEOUT_S,
                              "retry": Retry(NoBackoff(), 0), **settings.client_kwargs()}
    if settings.cluster:
        return RedisCluster(**common)
    return Redis(db=settings.db, **common)


class Connection:
    def __init__(self, settings: ValkeySettings, library: Callable[[Connection],
                                                                  Awaitable[None]]) -> None:
        self.settings = settings
        #: The asyncio loop the client belongs to; calls go there whichever loop is
        #: current for the caller (two appliances in one process each have their own).
        self.loop = trio_asyncio.current_loop.get()
        self.client: Redis | RedisCluster = make_client(settings)
        self._reload = library
        self._reload_lock = trio.Lock()
        self._reloads = 0

    @property
    def cluster(self) -> bool:
        return isinstance(self.client, RedisCluster)

    async def call(self, fn: Callable[..., Awaitable[Any]], *args: Any, **kwargs: Any) -> Any:
        """Run one asyncio client call; a store outage is ``StoreUnavailable``."""
        try:
            return await trio_asyncio.aio_as_trio(fn, loop=self.loop)(*args, **kwargs)
        except STORE_DOWN as exc:
            raise StoreUnavailable(f"the Valkey store at {self.settings.describe()} is "
                                   f"unavailable ({type(exc).__name__}: {exc}); retry the "
                                   f"request") from exc

    async def command(self, *args: Any, **kwargs: Any) -> Any:
        return await self.call(self.client.execute_command, *args, **kwargs)

    async def pipeline(self, build: Callable[[Any], None]) -> list[Any]:
        pipe = self.client.pipeline(transaction=False)
        build(pipe)
        return await self.call(pipe.execute)

    async def fcall(self, name: str, key: str, args: dict[str, Any], data: bytes | None = None,
                    *, read_only: bool = False) -> Any:
        """One library function on ``key``'s slot; a library lost to a restart, failover or
        FUNCTION FLUSH is loaded again once and the call retried once."""
        argv: list[Any] = [codec.encode_args(args)]
        if data is not None:
            argv.append(data)
        verb = "FCALL_RO" if read_only else "FCALL"
        seen = self._reloads
        try:
            return await self.command(verb, name, 1, key, *argv)
        except rx.ResponseError as exc:
            if not function_missing(exc):
                raise
        async with self._reload_lock:
            if self._reloads == seen:  # nobody reloaded since this call went out
                await self._reload(self)
                self._reloads += 1
        return await self.command(verb, name, 1, key, *argv)

    def primaries(self) -> list[ClusterNode] | list[None]:
        """The nodes a per-node command must reach (``[None]``: the one server)."""
        if isinstance(self.client, RedisCluster):
            return list(self.client.get_primaries())
        return [None]

    async def on_node(self, node: ClusterNode | None, *args: Any) -> Any:
        if node is None:
            return await self.command(*args)
        return await self.command(*args, target_nodes=node)

    async def on_every_node(self, *args: Any) -> dict[str, Any]:
        """``args`` on every node (replicas too in a cluster), by node name."""
        if isinstance(self.client, RedisCluster):
            nodes = self.client.get_nodes()
            return {node.name: await self.command(*args, target_nodes=node) for node in nodes}
        return {self.settings.describe(): await self.command(*args)}

    async def close(self) -> None:
        with trio.CancelScope(shield=True), contextlib.suppress(Exception):
            await trio_asyncio.aio_as_trio(self.client.aclose, loop=self.loop)()
