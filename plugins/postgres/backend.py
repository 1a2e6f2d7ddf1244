"""The PostgreSQL store: a psycopg 3 connection pool, driven from Trio through trio-asyncio.

Every operation is one READ COMMITTED transaction: the shared SQL operations
lock the rows they change (``FOR UPDATE``) and claims pass over rows another
appliance holds (``SKIP LOCKED``), so several appliances can share one database.
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
from psycopg_pool import AsyncConnectionPool

from appliance.backend import BackendEnv
from appliance.backend.sql.backend import SqlBackend
from appliance.backend.sql.statements import POSTGRES, Op, OpFactory, one, run_async
from appliance.core.errors import StartupError, StoreUnavailable

from . import DEFAULT_POOL_SIZE
from .listener import listen_for_work
from .migrate import migrate


def _running_loop() -> asyncio.AbstractEventLoop:
    return asyncio.get_running_loop()


# psycopg binds asyncio.get_running_loop when imported; if that happened before
# trio_asyncio patched it, the binding cannot see trio-asyncio loops. Look it up per call.
psycopg.waiting.get_running_loop = _running_loop  # type: ignore[attr-defined]

CONNECT_TIMEOUT_S = 5
ACQUIRE_TIMEOUT_S = 5.0
OPERATION_TIMEOUT_S = 30.0
MAX_TRIES = 5
#: serialization_failure, deadlock_detected: the server rolled back; run it again.
RETRY_SQLSTATES = frozenset({"40001", "40P01"})


class PostgresBackend(SqlBackend):
    name = "postgres"

    def __init__(self, url: str, *, pool_size: int = DEFAULT_POOL_SIZE) -> None:
        self.url = url
        self.pool_size = pool_size
        self.where = _where(url)
        self._pool: AsyncConnectionPool | None = None
        self._loop: Any = None
        #: Server pids of our pooled connections: the listener skips our own announcements,
        #: which the service has already delivered in-process.
        self._own_pids: set[int] = set()

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
                                     CONNECT_TIMEOUT_S)
            self._pool = await self._aio(self._open_pool)()
        except psycopg.OperationalError as exc:
            raise StartupError(f"cannot use PostgreSQL at {self.where}: {_first_line(exc)}; "
                               f"start it or fix FF_POSTGRES_URL") from exc
        except psycopg.Error as exc:
            raise StartupError(f"PostgreSQL at {self.where} refused the schema migration: "
                               f"{_first_line(exc)}") from exc
        try:
            await self._check_partitions()
        except BaseException:
            await self.close()
            raise

    async def _open_pool(self) -> AsyncConnectionPool:
        pool = AsyncConnectionPool(
            self.url, min_size=1, max_size=self.pool_size, open=False, name="flowfabric",
            timeout=ACQUIRE_TIMEOUT_S, configure=self._remember_pid,
            kwargs={"autocommit": True, "row_factory": dict_row,
                    "connect_timeout": CONNECT_TIMEOUT_S})
        await pool.open(wait=True, timeout=CONNECT_TIMEOUT_S * 2)
        return pool

    async def _remember_pid(self, conn: psycopg.AsyncConnection[Any]) -> None:
        self._own_pids.add(conn.info.backend_pid)

    async def ping(self) -> None:
        await self._call(_select_one)

    async def close(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            await self._aio(pool.close)(timeout=ACQUIRE_TIMEOUT_S)

    async def serve_work_notifications(self, notify: Callable[[str], None], *,
                                       task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        await listen_for_work(self.url, self.where, self._aio, notify, ignore=self._own_pids,
                              task_status=task_status)

    # -- running operations ----------------------------------------------------------------
    async def _run(self, factory: OpFactory) -> Any:
        """One transaction, retried while the server says it rolled back (or never began).

        Shielded like the SQLite writer: once sent, an operation may commit, so
        the caller stays to hear the answer instead of leaving a lease unknown.
        """
        pool = self._pool
        if pool is None:
            raise StoreUnavailable(f"the PostgreSQL store at {self.where} is closed")
        recheck = False
        with trio.CancelScope(shield=True):
            for attempt in range(1, MAX_TRIES + 1):
                try:
                    with self._store_errors(), trio.fail_after(OPERATION_TIMEOUT_S):
                        return await self._aio(_transaction)(pool, factory, recheck)
                except _Retry as retry:
                    if attempt == MAX_TRIES:
                        raise StoreUnavailable(
                            f"PostgreSQL at {self.where}: {retry} after {MAX_TRIES} tries; "
                            f"retry the request") from retry.__cause__
                    recheck = retry.stale
                    await trio.sleep(0.005 * 2**attempt * random.uniform(0.5, 1.5))
        raise AssertionError("unreachable")

    @contextmanager
    def _store_errors(self) -> Iterator[None]:
        """The one place where driver trouble becomes a retryable ``StoreUnavailable``.

        Typed errors raised by the operations, and ``_Retry``, pass through.
        """
        try:
            yield
        except (psycopg.OperationalError, psycopg.InterfaceError) as exc:  # incl. PoolTimeout
            raise StoreUnavailable(f"PostgreSQL at {self.where} is unavailable: "
                                   f"{_first_line(exc)}") from exc
        except trio.TooSlowError as exc:
            raise StoreUnavailable(f"PostgreSQL at {self.where} did not answer within "
                                   f"{OPERATION_TIMEOUT_S:g}s") from exc


class _Retry(Exception):
    """The transaction certainly did not commit; running it again is safe."""

    def __init__(self, reason: str, *, stale: bool = False) -> None:
        super().__init__(reason)
        self.stale = stale


async def _transaction(pool: AsyncConnectionPool, factory: OpFactory, recheck: bool) -> Any:
    """(asyncio) Run ``factory()`` in one transaction on a pooled connection."""
    if recheck:
        await pool.check()  # drop every pooled connection a server restart left dead
    async with pool.connection() as conn:
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


def _select_one() -> Op:
    yield one("SELECT 1 AS ok")


def _where(url: str) -> str:
    """``host:port/dbname`` of a conninfo string or URL, without user or password."""
    try:
        info = conninfo_to_dict(url)
    except psycopg.ProgrammingError as exc:
        raise StartupError(f"invalid value for FF_POSTGRES_URL: {_first_line(exc)}; expected "
                           f"e.g. postgresql://user@127.0.0.1:5432/flowfabric") from None
    host = info.get("host") or info.get("hostaddr") or "localhost"
    dbname = info.get("dbname") or info.get("user") or "postgres"
    return f"{host}:{info.get('port') or 5432}/{dbname}"


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
