"""FlowFabric's embedded default backend (``FF_BACKEND=sqlite``)."""

from __future__ import annotations

from typing import Any

from appliance.backend import hookimpl

from .backend import DEFAULT_PATH, SqliteBackend

__all__ = ["SqliteBackend"]


@hookimpl
def flowfabric_backend_names() -> list[str]:
    return ["sqlite"]


@hookimpl
def flowfabric_backend(name: str, config: Any) -> SqliteBackend | None:
    if name != "sqlite":
        return None
    return SqliteBackend(config.option("FF_SQLITE_PATH") or DEFAULT_PATH)
