"""Discovering backend plugins and picking one.

A plugin that fails to import or register is recorded, reported by
``flowfabric plugins`` and in the log, and does not stop the others.
"""

from __future__ import annotations

import importlib.metadata
import logging
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

import pluggy

from appliance.core.errors import StartupError

from . import hookspecs
from .protocol import BackendBase

log = logging.getLogger("flowfabric.plugins")

ENTRY_POINT_GROUP = "flowfabric"


@dataclass(slots=True)
class PluginInfo:
    name: str
    source: str
    version: str | None = None
    backends: list[str] = field(default_factory=list)
    error: str | None = None


@dataclass(slots=True)
class Plugins:
    """The plugin manager plus what was found, what failed and why."""

    pm: pluggy.PluginManager
    infos: list[PluginInfo] = field(default_factory=list)
    owners: dict[str, str] = field(default_factory=dict)  # backend name → plugin name

    def register(self, module: ModuleType | object, name: str, source: str,
                 version: str | None = None) -> PluginInfo:
        info = PluginInfo(name=name, source=source, version=version)
        self.infos.append(info)
        try:
            self.pm.register(module, name=name)
            self.pm.check_pending()
            names = getattr(module, "flowfabric_backend_names", lambda: [])()
        except Exception as exc:  # a plugin's own bug must not stop the others
            if self.pm.is_registered(module):
                self.pm.unregister(module)
            info.error = f"{type(exc).__name__}: {exc}"
            log.warning("plugin %r from %s could not be registered: %s", name, source,
                        info.error)
            return info
        for backend in names or []:
            if backend in self.owners:
                info.error = (f"backend name {backend!r} is already provided by plugin "
                              f"{self.owners[backend]!r}; rename one of them")
                log.warning("plugin %r: %s", name, info.error)
                self.pm.unregister(module)
                return info
        for backend in names or []:
            self.owners[backend] = name
        info.backends = list(names or [])
        return info

    def backend_names(self) -> list[str]:
        return sorted(self.owners)

    def make_backend(self, name: str, config: Any) -> BackendBase:
        if name not in self.owners:
            broken = [i for i in self.infos if i.error]
            hint = "".join(f"\n  plugin {i.name!r} ({i.source}) failed: {i.error}" for i in broken)
            raise StartupError(
                f"unknown backend {name!r}: set FF_BACKEND / --backend to one of "
                f"{', '.join(self.backend_names()) or '(none installed)'}{hint}")
        plugin = self.pm.get_plugin(self.owners[name])
        try:
            backend = plugin.flowfabric_backend(name=name, config=config)
        except StartupError:
            raise
        except Exception as exc:
            raise StartupError(f"plugin {self.owners[name]!r} failed to build backend "
                               f"{name!r}: {type(exc).__name__}: {exc}") from exc
        if not isinstance(backend, BackendBase):
            raise StartupError(f"plugin {self.owners[name]!r} returned {type(backend).__name__} "
                               f"for backend {name!r}; expected a BackendBase subclass")
        return backend


def get_plugin_manager() -> Plugins:
    """Specs, then every entry point in the ``flowfabric`` group."""
    pm = pluggy.PluginManager("flowfabric")
    pm.add_hookspecs(hookspecs)
    plugins = Plugins(pm)
    for ep in sorted(importlib.metadata.entry_points(group=ENTRY_POINT_GROUP),
                     key=lambda e: e.name):
        dist = getattr(ep, "dist", None)
        source = f"entry point {ep.value!r} of {dist.name if dist else 'unknown distribution'}"
        version = dist.version if dist else None
        try:
            module = ep.load()
        except Exception as exc:
            info = PluginInfo(name=ep.name, source=source, version=version,
                              error=f"import failed: {type(exc).__name__}: {exc}")
            plugins.infos.append(info)
            log.warning("plugin %r (%s) could not be imported: %s", ep.name, source, info.error)
            continue
        plugins.register(module, ep.name, source, version)
    return plugins
