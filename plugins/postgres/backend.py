"""The PostgreSQL store: a psycopg 3 connection pool, driven from Trio through trio-asyncio.

Every operation is one READ COMMITTED transaction: the shared SQL operations
lock the rows they change (``FOR UPDATE``) and claims pass over rows another
appliance holds (``SKIP LOCKED``), so several appliances can share one database.

While the server is unreachable a circuit breaker (``appliance.backend.circuit``)
fails every operation at once; its probe runs in ``serve_work_notifications``.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
import psycopg.waiting
import trio
import trio_asyncio
from psycopg.conninfo import conninfo_to_dict
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool, PoolClosed, PoolTimeout

from appliance.backend import BackendEnv
from appliance.backend.circuit import Circuit
from appliance.backend.sql import POSTGRES, OpFactory, SqlBackend, run_async
from appliance.core.errors import FlowFabricError, StartupError, StoreUnavailable

from . import DEFAULT_POOL_SIZE
from .listener import listen_for_work
from .migrate import connect, libpq_timeout, migrate, within


def _running_loop() -> asyncio.AbstractEventLoop:
    return asyncio.get_running_loop()


# psycopg binds asyncio.get_running_loop when imported; if that happened before
# trio_asyncio patched it, the binding cannot see trio-asyncio loops. Look it up per call.
psycopg.waiting.get_running_loop = _running_loop  # type: ignore[attr-defined]

#: Default of ``connect_timeout_s``: for a new connection and for a pooled one.
CONNECT_TIMEOUT_S = 1.0
OPERATION_TIMEOUT_S = 30.0
#: ``/healthz`` must answer within 100 ms whatever the store does.
PING_TIMEOUT_S = 0.08
MAX_TRIES = 5
#: serialization_failure, deadlock_detected: the server rolled back; run it again.
RETRY_SQLSTATES = frozenset({"40001", "40P01"})
#: admin_shutdown, crash_shutdown, cannot_connect_now: the server is going away or not up
#: yet; with class 08 (connection exception) and no SQLSTATE at all, "unreachable".
GOING_AWAY_SQLSTATES = frozenset({"57P01", "57P02", "57P03"})
#: invalid_catalog_name: the database named in the URL does not exist.
NO_DATABASE = "3D000"


class PostgresBackend(SqlBackend):
    name = "postgres"

    def __init__(self, url: str, *, pool_size: int = DEFAULT_POOL_SIZE,
                 connect_timeout_s: float = CONNECT_TIMEOUT_S) -> None:
        self.url = url
        self.pool_size = pool_size
        #: Transactions in flight, at most one per pooled connection: a burst of requests
        #: waits its turn here (no deadline) instead of timing out on the pool, whose
        #: timeout then only means the server is not giving connections.
        self._slots = trio.Semaphore(pool_size)
        self.store_connections = pool_size + 4  # the pool, LISTEN, probes
        self.connect_timeout_s = connect_timeout_s
        self.where = _where(url)
        self._pool: AsyncConnectionPool | None = None
        self._loop: Any = None
        self._closed = False
        #: Server pids of our pooled connections: the listener skips our own announcements,
        #: which the service has already delivered in-process.
        self._own_pids: set[int] = set()
        self.circuit = Circuit(f"PostgreSQL at {self.where}", self._probe,
                               on_close=self._renew_pool, probe_timeout_s=connect_timeout_s * 2)

    def describe(self) -> str:
        return f"postgres {self.where}"

    def _aio(self, fn: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
        """``fn`` (asyncio) made awaitable from Trio, on the loop ``prepare`` ran in."""
        return trio_asyncio.aio_as_trio(fn, loop=self._loop)

    # -- lifecycle ---------------------------------------------------------------------
    async def prepare(self, env: BackendEnv) -> None:
        self.env = env
        self._loop = trio_asyncio.current_loop.get()
        if self._loop is None:
            raise StartupError("the postgres backend must be prepared inside "
                               "trio_asyncio.open_loop()")
        try:
            await self._aio(migrate)(self.url, self.where, env.clock.now_ms(),
                                     self.connect_timeout_s)
            self._pool = await self._aio(self._open_pool)()
        except psycopg.OperationalError as exc:
            raise StartupError(_cannot_connect(self.url, self.where, exc)) from exc
        except psycopg.Error as exc:
            raise StartupError(f"PostgreSQL at {self.where} refused the schema migration: "
                               f"{_first_line(exc)}") from exc
        try:
            await self.check_partitions()
        except BaseException:
            await self.close()
            raise

    async def _open_pool(self) -> AsyncConnectionPool:
        """(asyncio) A pool holding its first connection."""
        pool = AsyncConnectionPool(
            self.url, min_size=1, max_size=self.pool_size, open=False, name="flowfabric",
            timeout=self.connect_timeout_s, configure=self._remember_pid,
            connection_class=_connecting_within(self.connect_timeout_s),
            kwargs={"autocommit": True, "row_factory": dict_row,
                    "cursor_factory": psycopg.AsyncRawCursor,
                    "connect_timeout": libpq_timeout(self.connect_timeout_s)})
        try:
            await pool.open(wait=True, timeout=self.connect_timeout_s * 2)
        except BaseException:
            await pool.close(timeout=self.connect_timeout_s)
            raise
        return pool

    async def _remember_pid(self, conn: psycopg.AsyncConnection[Any]) -> None:
        self._own_pids.add(conn.info.backend_pid)

    async def ping(self) -> None:
        """``SELECT 1`` within 80 ms; at once while the circuit is open."""
        self.circuit.check()
        pool = self._current_pool()
        with trio.move_on_after(PING_TIMEOUT_S):
            with self._store_errors():
                await self._aio(_detached)(_select_one, pool)
            return
        self.circuit.suspect()  # busy, or gone: the probe tells which
        raise StoreUnavailable(f"PostgreSQL at {self.where} did not answer within "
                               f"{PING_TIMEOUT_S * 1000:.0f} ms; retry the request")

    async def close(self) -> None:
        """Release the pool, without waiting long for a server that is down."""
        self._closed = True
        pool, self._pool = self._pool, None
        if pool is not None:
            await self._aio(pool.close)(timeout=self.connect_timeout_s)

    async def serve(self, notify: Callable[[str], None], *,
                    task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        """Wake-ups from other appliances, and the circuit's probe, until cancelled."""
        async with trio.open_nursery() as nursery:
            await nursery.start(self.circuit.run)
            await listen_for_work(self.url, self.where, self._aio, notify,
                                  ignore=self._own_pids, connect_timeout_s=self.connect_timeout_s,
                                  circuit=self.circuit, task_status=task_status)

    # -- the circuit ------------------------------------------------------------------------
    async def _probe(self) -> None:
        """A new connection answers ``SELECT 1``: the server takes connections again."""
        await self._aio(_detached)(_select_one_on_a_new_connection, self.url,
                                   self.connect_timeout_s)

    async def _renew_pool(self) -> None:
        """Swap in a fresh pool before the circuit closes.

        The old one holds connections the outage left dead and reconnection attempts
        in growing backoff, which would stall the first requests after recovery; it
        is closed in the background.
        """
        if self._pool is None:
            return
        self._own_pids.clear()  # a restarted server hands out pids anew
        fresh = await self._aio(self._open_pool)()
        old, self._pool = self._pool, fresh
        if self._closed or old is None:  # closed meanwhile
            self._pool = None
            await self._aio(fresh.close)(timeout=self.connect_timeout_s)
            return
        await self._aio(_in_background)(old.close, self.connect_timeout_s)

    # -- running operations ----------------------------------------------------------------
    def _current_pool(self) -> AsyncConnectionPool:
        if self._pool is None:
            raise StoreUnavailable(f"the PostgreSQL store at {self.where} is closed")
        return self._pool

    async def run(self, factory: OpFactory) -> Any:
        """One transaction, retried while the server says it rolled back (or never began).

        Only the transaction itself, first statement to COMMIT, outlasts a cancellation
        (see ``_outcome``). Waiting for a slot, a connection or a retry can be cancelled,
        and ends at once when the circuit opens.
        """
        recheck = False
        with self.circuit.failing_fast():
            for attempt in range(1, MAX_TRIES + 1):
                try:
                    with self._store_errors():
                        async with self._slots:
                            return await self._attempt(factory, recheck)
                except _Retry as retry:
                    if attempt == MAX_TRIES:
                        raise StoreUnavailable(
                            f"PostgreSQL at {self.where}: {retry} after {MAX_TRIES} tries; "
                            f"retry the request") from retry.__cause__
                    recheck = retry.stale
                    if retry.stale:
                        self.circuit.suspect()  # a dead connection: is the server gone?
                    await trio.sleep(0.005 * 2**attempt * random.uniform(0.5, 1.5))
        raise AssertionError("unreachable")

    async def _attempt(self, factory: OpFactory, recheck: bool) -> Any:
        """A pooled connection (cancellable), then one transaction on it."""
        pool = self._current_pool()
        if recheck:  # drop every pooled connection a server restart left dead
            await self._aio(_detached)(pool.check)
        conn = await self._aio(pool.getconn)()
        with trio.CancelScope(shield=True):  # from here the transaction gives the connection back
            running = await self._aio(_started)(_transaction, pool, conn, factory)
        try:
            with trio.fail_after(OPERATION_TIMEOUT_S):
                return await self._outcome(running)
        finally:
            running.cancel()  # when given up on: psycopg winds it down in the background

    async def _outcome(self, running: asyncio.Task[Any]) -> Any:
        """The transaction's outcome; a server slow to give it is suspected.

        Once sent, an operation may commit, so a caller cancelled meanwhile still waits
        to hear it (like the SQLite writer, a lease is not left unknown), but only
        ``connect_timeout_s`` more: a forced exit, an opening circuit or the operation
        timeout must not wait out a server that does not answer.
        """
        try:
            with trio.move_on_after(self.connect_timeout_s):
                return await self._aio(_outcome)(running)
            self.circuit.suspect()  # this slow: is the server still there?
            return await self._aio(_outcome)(running)
        except trio.Cancelled:
            with trio.CancelScope(shield=True), trio.move_on_after(self.connect_timeout_s):
                # Heard in time: the caller gets it, and the cancellation at its next await.
                return await self._aio(_outcome)(running)
            raise

    @contextmanager
    def _store_errors(self) -> Iterator[None]:
        """The one place where driver trouble becomes a retryable ``StoreUnavailable``.

        An unreachable server opens the circuit; trouble that may only mean "busy"
        makes it probe. Typed errors raised by the operations, and ``_Retry``, pass
        through: the server answered.
        """
        try:
            yield
        except (psycopg.OperationalError, psycopg.InterfaceError) as exc:  # incl. PoolTimeout
            raise self._unavailable(exc) from exc
        except trio.TooSlowError as exc:
            self.circuit.suspect()
            raise StoreUnavailable(f"PostgreSQL at {self.where} did not answer within "
                                   f"{OPERATION_TIMEOUT_S:g}s") from exc
        except StoreUnavailable:
            raise
        except (FlowFabricError, psycopg.Error):
            self.circuit.succeeded()
            raise
        else:
            self.circuit.succeeded()

    def _unavailable(self, exc: psycopg.Error) -> StoreUnavailable:
        if isinstance(exc, PoolClosed) or self._pool is None:
            return StoreUnavailable(f"the PostgreSQL store at {self.where} is closed")
        if isinstance(exc, PoolTimeout):
            self.circuit.suspect()
            return StoreUnavailable(
                f"PostgreSQL at {self.where} gave no connection in time (all {self.pool_size} "
                f"in use, or the server is unreachable); retry the request")
        if _unreachable(exc):
            self.circuit.open(_first_line(exc))
        return StoreUnavailable(f"PostgreSQL at {self.where} is unavailable: "
                                f"{_first_line(exc)}")


class _Retry(Exception):
    """The transaction certainly did not commit; running it again is safe."""

    def __init__(self, reason: str, *, stale: bool = False) -> None:
        super().__init__(reason)
        self.stale = stale


async def _transaction(pool: AsyncConnectionPool, conn: psycopg.AsyncConnection[Any],
                       factory: OpFactory) -> Any:
    """(asyncio) Run ``factory()`` in one transaction on ``conn``, then give it back."""
    committing = False
    try:
        async with conn.transaction():
            result = await run_async(factory(), conn, POSTGRES)
            committing = True
        return result
    except psycopg.Error as exc:
        if exc.sqlstate in RETRY_SQLSTATES:
            raise _Retry(f"transaction rolled back by the server ({exc.sqlstate})") from exc
        if conn.broken and not committing:
            raise _Retry("connection lost before commit", stale=True) from exc
        raise
    finally:
        await pool.putconn(conn)


async def _select_one(pool: AsyncConnectionPool) -> None:
    """(asyncio) ``SELECT 1`` on a pooled connection."""
    async with pool.connection(timeout=PING_TIMEOUT_S) as conn:
        await conn.execute("SELECT 1")


async def _select_one_on_a_new_connection(url: str, timeout_s: float) -> None:
    """(asyncio) ``SELECT 1`` on a connection of its own, each step within ``timeout_s``."""
    conn = await connect(url, timeout_s, autocommit=True)
    try:
        await asyncio.wait_for(conn.execute("SELECT 1"), timeout_s)
    finally:
        await conn.close()


async def _detached(fn: Callable[..., Awaitable[Any]], *args: Any) -> Any:
    """(asyncio) ``fn(*args)`` as a task of its own, so a caller who stops waiting returns at
    once (psycopg may take seconds to wind down a cancelled query); the task runs on."""
    return await _outcome(await _started(fn, *args))


async def _started(fn: Callable[..., Awaitable[Any]], *args: Any) -> asyncio.Task[Any]:
    """(asyncio) ``fn(*args)`` running as a task of its own."""
    task = asyncio.ensure_future(fn(*args))
    task.add_done_callback(_retrieve)
    return task


async def _outcome(task: asyncio.Task[Any]) -> Any:
    """(asyncio) What ``task`` returns or raises; a caller who stops waiting leaves it be."""
    return await asyncio.shield(task)


async def _in_background(fn: Callable[..., Awaitable[Any]], *args: Any) -> None:
    """(asyncio) Start ``fn(*args)`` and return without waiting for it."""
    asyncio.ensure_future(fn(*args)).add_done_callback(_retrieve)


def _retrieve(task: asyncio.Future[Any]) -> None:
    """An abandoned task's outcome may be nobody's business; read it so asyncio does not warn."""
    if not task.cancelled():
        task.exception()


def _connecting_within(timeout_s: float) -> type[psycopg.AsyncConnection[Any]]:
    """The pool's connection class: ``connect`` gives up after ``timeout_s``."""

    class Connection(psycopg.AsyncConnection[Any]):
        @classmethod
        async def connect(cls, *args: Any, **kwargs: Any) -> Any:
            return await within(timeout_s, super().connect(*args, **kwargs))

    return Connection


def _unreachable(exc: psycopg.Error) -> bool:
    """Whether the server could not be talked to, rather than answered with an error."""
    if not isinstance(exc, psycopg.OperationalError) or isinstance(exc, PoolTimeout | PoolClosed):
        return False
    state = exc.sqlstate
    return state is None or state.startswith("08") or state in GOING_AWAY_SQLSTATES


def _cannot_connect(url: str, where: str, exc: psycopg.OperationalError) -> str:
    """The startup refusal, naming what to do. A connection refused for a missing database
    carries no SQLSTATE (libpq keeps only the text), so the server's words count too."""
    dbname = _dbname(url)
    if exc.sqlstate == NO_DATABASE or f'database "{dbname}" does not exist' in str(exc):
        host = where.rsplit("/", 1)[0]
        return (f"the database {dbname!r} does not exist on PostgreSQL at {host}: create it "
                f"(createdb {dbname}, or CREATE DATABASE {dbname}) or fix FF_POSTGRES_URL")
    slow = isinstance(exc, psycopg.errors.ConnectionTimeout | PoolTimeout)
    return (f"cannot use PostgreSQL at {where}: {_first_line(exc)}; start it or fix "
            f"FF_POSTGRES_URL{' (or raise FF_POSTGRES_CONNECT_TIMEOUT_MS)' if slow else ''}")


def _where(url: str) -> str:
    """``host:port/dbname`` of a conninfo string or URL, without user or password."""
    info = _conninfo(url)
    host = info.get("host") or info.get("hostaddr") or "localhost"
    return f"{host}:{info.get('port') or 5432}/{_dbname(url)}"


def _dbname(url: str) -> str:
    info = _conninfo(url)
    return str(info.get("dbname") or info.get("user") or "postgres")


def _conninfo(url: str) -> dict[str, Any]:
    try:
        return conninfo_to_dict(url)
    except psycopg.ProgrammingError as exc:
        raise StartupError(f"invalid value for FF_POSTGRES_URL: {_first_line(exc)}; expected "
                           f"e.g. postgresql://user@127.0.0.1:5432/flowfabric") from None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
