"""The asyncio client seen from Trio: every call, pipeline and FCALL goes through here, so
"the store went away" becomes ``StoreUnavailable`` in exactly one place, and that place
keeps the store's circuit (``appliance.backend.circuit``): while the store is unreachable,
calls fail at once."""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import trio
import trio_asyncio
from redis import exceptions as rx
from redis.asyncio import Redis
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.connection import BlockingConnectionPool, SSLConnection
from redis.asyncio.connection import Connection as RedisConnection
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from appliance.backend.circuit import Circuit
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

#: Errors that only say "slow" or "this slot, right now": the probe decides whether the
#: store is down. The others in STORE_DOWN say it could not be talked to.
MAYBE_DOWN: tuple[type[BaseException], ...] = (
    rx.TimeoutError, TimeoutError, rx.ClusterDownError, rx.TryAgainError, rx.MasterDownError,
    rx.ReadOnlyError, rx.RedisClusterException)

SOCKET_TIMEOUT_S = 10.0
CONNECT_TIMEOUT_S = 1.0
#: Connections per appliance (per node in a cluster), and how long a call waits for one
#: (standalone; a cluster node refuses at once). The wait only bounds overload: an outage
#: opens the circuit, which ends such waits at once.
MAX_CONNECTIONS = 64
POOL_WAIT_S = 2.0


def function_missing(exc: BaseException) -> bool:
    return isinstance(exc, rx.ResponseError) and any(
        text in str(exc).lower() for text in FUNCTION_MISSING)


def pool_exhausted(exc: BaseException) -> bool:
    """Every connection is in use: the appliance is busy, the store may be fine."""
    return isinstance(exc, rx.MaxConnectionsError) or (
        isinstance(exc, rx.ConnectionError) and str(exc) == "No connection available.")


def make_client(settings: ValkeySettings, *,
                max_connections: int | None = None) -> Redis | RedisCluster:
    """No client-side retries: a write replayed after a lost reply could apply twice, so a
    failed call is answered as retryable and the caller decides. Connections are bounded:
    a burst of requests waits for one instead of opening one each."""
    common: dict[str, Any] = {"socket_timeout": SOCKET_TIMEOUT_S,
                              "socket_connect_timeout": CONNECT_TIMEOUT_S,
                              "retry": Retry(NoBackoff(), 0), **settings.client_kwargs()}
    max_connections = max_connections or MAX_CONNECTIONS
    if settings.cluster:
        return RedisCluster(max_connections=max_connections, **common)
    tls = common.pop("ssl")
    pool = BlockingConnectionPool(connection_class=SSLConnection if tls else RedisConnection,
                                  max_connections=max_connections, timeout=POOL_WAIT_S,
                                  db=settings.db, **common)
    return Redis.from_pool(pool)


class Connection:
    def __init__(self, settings: ValkeySettings, library: Callable[[Connection],
                                                                  Awaitable[None]]) -> None:
        self.settings = settings
        #: The asyncio loop the client belongs to; calls go there whichever loop is
        #: current for the caller (two appliances in one process each have their own).
        self.loop = trio_asyncio.current_loop.get()
        self.client: Redis | RedisCluster = make_client(settings)
        #: The probe's own connection (standalone): a full pool must not look like an outage.
        self._prober: Redis | None = (None if settings.cluster
                                      else make_client(settings, max_connections=1))
        self._reload = library
        self._reload_lock = trio.Lock()
        self._reloads = 0
        self.circuit = Circuit(f"the Valkey store at {settings.describe()}", self._probe,
                               on_close=self._drop_idle, probe_timeout_s=CONNECT_TIMEOUT_S)

    @property
    def cluster(self) -> bool:
        return isinstance(self.client, RedisCluster)

    async def call(self, fn: Callable[..., Awaitable[Any]], *args: Any, **kwargs: Any) -> Any:
        """Run one asyncio client call; a store outage is ``StoreUnavailable``, at once while
        the circuit is open."""
        with self.circuit.failing_fast():
            try:
                result = await self._aio(fn)(*args, **kwargs)
            except STORE_DOWN as exc:
                raise self._unavailable(exc) from exc
            except rx.RedisError:
                self.circuit.succeeded()  # the store answered, with an error
                raise
        self.circuit.succeeded()
        return result

    def _aio(self, fn: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
        return trio_asyncio.aio_as_trio(fn, loop=self.loop)

    def _unavailable(self, exc: BaseException) -> StoreUnavailable:
        if pool_exhausted(exc):
            return StoreUnavailable(f"all {MAX_CONNECTIONS} connections to the Valkey store at "
                                    f"{self.settings.describe()} are in use; retry the request")
        reason = f"{type(exc).__name__}: {exc}"
        if isinstance(exc, MAYBE_DOWN):
            self.circuit.suspect()
        else:
            self.circuit.open(reason)
        return StoreUnavailable(f"the Valkey store at {self.settings.describe()} is "
                                f"unavailable ({reason}); retry the request")

    async def _probe(self) -> None:
        """A PING answered (on every node of a cluster): the store takes commands again."""
        try:
            if self._prober is not None:
                await self._aio(self._prober.execute_command)("PING")
            else:
                await self._aio(self.client.execute_command)("PING")
        except STORE_DOWN as exc:
            if not pool_exhausted(exc):
                raise

    async def _drop_idle(self) -> None:
        """Before the circuit closes: idle connections the outage left dead are dropped."""
        with contextlib.suppress(Exception):
            if isinstance(self.client, RedisCluster):
                for node in self.client.get_nodes():
                    await self._aio(node.disconnect_free_connections)()
            else:
                await self._aio(self.client.connection_pool.disconnect)(inuse_connections=False)

    async def command(self, *args: Any, **kwargs: Any) -> Any:
        return await self.call(self.client.execute_command, *args, **kwargs)

    async def pipeline(self, build: Callable[[Any], None], *,
                       raise_on_error: bool = True) -> list[Any]:
        pipe = self.client.pipeline(transaction=False)
        build(pipe)
        answers = await self.call(pipe.execute, raise_on_error=raise_on_error)
        if not raise_on_error:  # a store outage still fails the whole pipeline
            for answer in answers:
                if isinstance(answer, STORE_DOWN):
                    raise self._unavailable(answer) from answer
        return list(answers)

    async def fcall(self, name: str, key: str | list[str], args: dict[str, Any],
                    *data: bytes | None, read_only: bool = False) -> Any:
        """One library function on ``key``'s slot (or ``keys``, of one slot); a library
        lost to a restart, failover or FUNCTION FLUSH is loaded again once and the call
        retried once."""
        keys = [key] if isinstance(key, str) else key
        argv: list[Any] = [codec.encode_args(args), *(d for d in data if d is not None)]
        verb = "FCALL_RO" if read_only else "FCALL"
        seen = self._reloads
        try:
            return await self.command(verb, name, len(keys), *keys, *argv)
        except rx.ResponseError as exc:
            if not function_missing(exc):
                raise
        async with self._reload_lock:
            if self._reloads == seen:  # nobody reloaded since this call went out
                await self._reload(self)
                self._reloads += 1
        return await self.command(verb, name, len(keys), *keys, *argv)

    async def fcall_many(self, calls: Sequence[tuple[str, list[str], dict[str, Any],
                                                     list[bytes]]]) -> list[Any]:
        """Library functions ``(name, keys, args, bytes)`` in one pipeline (one round trip
        per node), answers in order; an error answers its own call only. Calls a lost
        library refused are retried one by one, after loading it again."""
        if len(calls) == 1:
            return [await self._one(*calls[0])]

        def build(pipe: Any) -> None:
            for name, keys, args, data in calls:
                pipe.execute_command("FCALL", name, len(keys), *keys, codec.encode_args(args),
                                     *data)

        answers = await self.pipeline(build, raise_on_error=False)
        for i, answer in enumerate(answers):
            if isinstance(answer, BaseException) and function_missing(answer):
                answers[i] = await self._one(*calls[i])
        return answers

    async def _one(self, name: str, keys: list[str], args: dict[str, Any],
                   data: list[bytes]) -> Any:
        try:
            return await self.fcall(name, keys, args, *data)
        except rx.ResponseError as exc:
            return exc

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
            await self._aio(self.client.aclose)()
            if self._prober is not None:
                await self._aio(self._prober.aclose)()
