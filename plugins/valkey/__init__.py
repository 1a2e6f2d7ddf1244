"""Valkey/Redis backend (``FF_BACKEND=valkey``): the state machine as a Lua function library.

Settings: ``FF_VALKEY_URL`` (default ``redis://127.0.0.1:6379/0``; ``rediss://`` for TLS,
``?cluster=true`` for a cluster), or ``FF_HOST``/``FF_PORT``/``FF_TLS``; ``FF_CLUSTER=true``
for Valkey/Redis Cluster. Needs Redis ≥ 7.0 or Valkey ≥ 7.2.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from appliance.backend import Setting, hookimpl

from .settings import SETTINGS, ValkeySettings, settings_from

if TYPE_CHECKING:
    from .backend import ValkeyBackend

__all__ = ["LIBRARY_VERSION", "ValkeyBackend", "ValkeySettings"]


def __getattr__(name: str) -> Any:
    """The driver (redis) is imported only when this backend is used."""
    if name == "ValkeyBackend":
        from .backend import ValkeyBackend
        return ValkeyBackend
    if name == "LIBRARY_VERSION":
        from .library import LIBRARY_VERSION
        return LIBRARY_VERSION
    raise AttributeError(name)


@hookimpl
def flowfabric_backend_names() -> list[str]:
    return ["valkey"]


@hookimpl
def flowfabric_settings() -> list[Setting]:
    return list(SETTINGS)


@hookimpl
def flowfabric_backend(name: str, config: Any) -> ValkeyBackend | None:
    if name != "valkey":
        return None
    settings = settings_from(config)
    from .backend import ValkeyBackend
    return ValkeyBackend(settings)
