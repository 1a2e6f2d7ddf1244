"""PostgreSQL backend (``FF_BACKEND=postgres``): several appliances may share one database."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from appliance.backend import hookimpl
from appliance.core.errors import StartupError

if TYPE_CHECKING:
    from .backend import PostgresBackend

__all__ = ["PostgresBackend"]

DEFAULT_POOL_SIZE = 10
MAX_POOL_SIZE = 1000


def __getattr__(name: str) -> Any:
    """The driver (psycopg) is imported only when this backend is used."""
    if name == "PostgresBackend":
        from .backend import PostgresBackend
        return PostgresBackend
    raise AttributeError(name)


@hookimpl
def flowfabric_backend_names() -> list[str]:
    return ["postgres"]


@hookimpl
def flowfabric_backend(name: str, config: Any) -> PostgresBackend | None:
    if name != "postgres":
        return None
    url = config.option("FF_POSTGRES_URL")
    if url is None:
        raise StartupError("FF_BACKEND=postgres requires FF_POSTGRES_URL, e.g. "
                           "postgresql://user@127.0.0.1:5432/flowfabric")
    from .backend import PostgresBackend
    return PostgresBackend(url, pool_size=_pool_size(config.option("FF_POSTGRES_POOL_SIZE")))


def _pool_size(raw: str | None) -> int:
    if raw is None:
        return DEFAULT_POOL_SIZE
    try:
        size = int(raw.strip())
    except ValueError:
        size = 0
    if not 1 <= size <= MAX_POOL_SIZE:
        raise StartupError(f"invalid value for FF_POSTGRES_POOL_SIZE: must be a whole number of "
                           f"connections from 1 to {MAX_POOL_SIZE}, got {raw!r}")
    return size
