"""PostgreSQL backend (``FF_BACKEND=postgres``): several appliances may share one database."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from appliance.backend import Setting, hookimpl
from appliance.core.errors import StartupError

if TYPE_CHECKING:
    from .backend import PostgresBackend

__all__ = ["PostgresBackend"]

DEFAULT_POOL_SIZE = 10
MAX_POOL_SIZE = 1000
DEFAULT_CONNECT_TIMEOUT_MS = 1000
CONNECT_TIMEOUT_RANGE_MS = (50, 60_000)

SETTINGS = (
    Setting("FF_POSTGRES_URL", None, "PostgreSQL libpq URL or conninfo string; required with "
            "--backend postgres"),
    Setting("FF_POSTGRES_POOL_SIZE", str(DEFAULT_POOL_SIZE),
            f"connections per appliance, 1..{MAX_POOL_SIZE}"),
    Setting("FF_POSTGRES_CONNECT_TIMEOUT_MS", str(DEFAULT_CONNECT_TIMEOUT_MS),
            "how long to wait for a connection to PostgreSQL, at startup and per request, "
            "before answering 503; 50..60000"),
)


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
def flowfabric_settings() -> list[Setting]:
    return list(SETTINGS)


@hookimpl
def flowfabric_backend(name: str, config: Any) -> PostgresBackend | None:
    if name != "postgres":
        return None
    url = config.option("FF_POSTGRES_URL")
    if url is None:
        raise StartupError("FF_BACKEND=postgres requires FF_POSTGRES_URL, e.g. "
                           "postgresql://user@127.0.0.1:5432/flowfabric")
    pool_size = _pool_size(config.option("FF_POSTGRES_POOL_SIZE"))
    timeout_ms = _connect_timeout_ms(config.option("FF_POSTGRES_CONNECT_TIMEOUT_MS"))
    from .backend import PostgresBackend
    return PostgresBackend(url, pool_size=pool_size, connect_timeout_s=timeout_ms / 1000)


def _pool_size(raw: str | None) -> int:
    return _whole("FF_POSTGRES_POOL_SIZE", raw, DEFAULT_POOL_SIZE, (1, MAX_POOL_SIZE),
                  "connections")


def _connect_timeout_ms(raw: str | None) -> int:
    return _whole("FF_POSTGRES_CONNECT_TIMEOUT_MS", raw, DEFAULT_CONNECT_TIMEOUT_MS,
                  CONNECT_TIMEOUT_RANGE_MS, "milliseconds")


def _whole(name: str, raw: str | None, default: int, bounds: tuple[int, int], unit: str) -> int:
    """``raw`` as a whole number within ``bounds``; unset gives ``default``."""
    if raw is None:
        return default
    lo, hi = bounds
    try:
        number = int(raw.strip())
    except ValueError:
        number = lo - 1
    if not lo <= number <= hi:
        raise StartupError(f"invalid value for {name}: must be a whole number of {unit} from "
                           f"{lo} to {hi}, got {raw!r}")
    return number
