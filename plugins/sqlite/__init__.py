"""FlowFabric's embedded default backend (``FF_BACKEND=sqlite``)."""

from __future__ import annotations

from typing import Any

from appliance.backend import Setting, hookimpl

from .backend import DEFAULT_PATH, SqliteBackend

__all__ = ["SqliteBackend"]

SETTINGS = (
    Setting("FF_SQLITE_PATH", DEFAULT_PATH, "SQLite database file (sqlite backend)",
            "--sqlite-path"),
)


@hookimpl
def flowfabric_backend_names() -> list[str]:
    return ["sqlite"]


@hookimpl
def flowfabric_settings() -> list[Setting]:
    return list(SETTINGS)


@hookimpl
def flowfabric_backend(name: str, config: Any) -> SqliteBackend | None:
    if name != "sqlite":
        return None
    return SqliteBackend(config.option("FF_SQLITE_PATH") or DEFAULT_PATH)
