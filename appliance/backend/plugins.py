"""Discovering backend plugins and picking one.

Plugins come from the ``flowfabric`` entry-point group of installed
distributions, then from the plugin path (``FF_PLUGIN_PATH`` /
``--plugin-path``): plain ``.py`` modules, folders made with
``pip install --target``, and pure-Python wheels — the way a frozen
executable, which has no site-packages of its own, takes new backends.
A plugin that fails to import or register is recorded, reported by
``flowfabric plugins`` and in the log, and does not stop the others.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import logging
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
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


def get_plugin_manager(plugin_path: Sequence[str] = ()) -> Plugins:
    """Specs, then every entry point of installed distributions, then the plugin path."""
    pm = pluggy.PluginManager("flowfabric")
    pm.add_hookspecs(hookspecs)
    plugins = Plugins(pm)
    _load_entry_points(plugins, importlib.metadata.entry_points(group=ENTRY_POINT_GROUP))
    for entry in plugin_path:
        _load_path_entry(plugins, Path(entry))
    return plugins


def _load_entry_points(plugins: Plugins, entry_points: Iterable[importlib.metadata.EntryPoint],
                       where: str = "") -> None:
    for ep in sorted(entry_points, key=lambda e: e.name):
        if ep.group != ENTRY_POINT_GROUP or plugins.pm.has_plugin(ep.name):
            continue
        dist = getattr(ep, "dist", None)
        source = (f"entry point {ep.value!r} of {dist.name if dist else 'unknown distribution'}"
                  + where)
        version = dist.version if dist else None
        try:
            module = ep.load()
        except Exception as exc:
            _broken(plugins, ep.name, source, version, exc)
            continue
        plugins.register(module, ep.name, source, version)


def _load_path_entry(plugins: Plugins, entry: Path) -> None:
    """One plugin-path entry: a wheel, or a folder of modules, wheels and distributions."""
    if not entry.exists():
        plugins.infos.append(PluginInfo(name=str(entry), source="plugin path",
                                         error="no such file or folder; fix FF_PLUGIN_PATH / "
                                               "--plugin-path"))
        log.warning("plugin path entry %s does not exist", entry)
        return
    if entry.is_file():
        if entry.suffix != ".whl":
            plugins.infos.append(PluginInfo(name=str(entry), source="plugin path",
                                            error="not a wheel (.whl) or a folder"))
            return
        _load_importable(plugins, entry, f" in wheel {entry}")
        return
    for wheel in sorted(entry.glob("*.whl")):
        _load_importable(plugins, wheel, f" in wheel {wheel}")
    owned = _load_importable(plugins, entry, f" in {entry}")
    for module_file in sorted(entry.glob("*.py")):
        name = module_file.stem
        if name in owned or plugins.pm.has_plugin(name):
            continue
        source = f"file {module_file}"
        try:
            module = importlib.import_module(name)
        except Exception as exc:
            _broken(plugins, name, source, None, exc)
            continue
        plugins.register(module, name, source)


def _load_importable(plugins: Plugins, location: Path, where: str) -> set[str]:
    """Put ``location`` on sys.path and register the entry points of the distributions in
    it; returns the top-level module names those distributions own."""
    if str(location) not in sys.path:
        sys.path.insert(0, str(location))
    owned: set[str] = set()
    for dist in importlib.metadata.distributions(path=[str(location)]):
        owned |= {Path(f).parts[0].removesuffix(".py") for f in dist.files or ()}
        _load_entry_points(plugins, dist.entry_points, where)
    return owned


def _broken(plugins: Plugins, name: str, source: str, version: str | None,
            exc: Exception) -> None:
    info = PluginInfo(name=name, source=source, version=version,
                      error=f"import failed: {type(exc).__name__}: {exc}")
    plugins.infos.append(info)
    log.warning("plugin %r (%s) could not be imported: %s", name, source, info.error)
