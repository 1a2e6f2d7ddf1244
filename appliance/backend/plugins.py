"""Discovering backend plugins and picking one.

Plugins come from the ``flowfabric`` entry-point group of installed
distributions, then from the plugin path (``FF_PLUGIN_PATH`` /
``--plugin-path``): plain ``.py`` modules, folders made with
``pip install --target``, and pure-Python wheels — the way a frozen
executable, which has no site-packages of its own, takes new backends.
A plugin that fails to import or register is recorded, reported by
``flowfabric plugins`` and in the log, and does not stop the others.
Each plugin declares the ``FF_*`` settings it reads (``flowfabric_settings``);
a setting has exactly one owner, the appliance or one plugin.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import logging
import re
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import pluggy

from appliance.config import SETTINGS, TEST_PREFIX
from appliance.core.errors import StartupError
from appliance.core.settings import Setting

from . import hookspecs
from .protocol import BackendBase

log = logging.getLogger("flowfabric.plugins")

ENTRY_POINT_GROUP = "flowfabric"
SETTING_NAME = re.compile(r"FF_[A-Z0-9_]+")
FLAG = re.compile(r"--[a-z0-9][a-z0-9-]*")
#: Options of ``flowfabric serve`` that are not settings; no plugin may take them.
RESERVED_FLAGS = ("--set", "--help", "--version")


@dataclass(slots=True)
class PluginInfo:
    name: str
    source: str
    version: str | None = None
    backends: list[str] = field(default_factory=list)
    settings: list[Setting] = field(default_factory=list)
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
            names = list(getattr(module, "flowfabric_backend_names", lambda: [])() or [])
            settings = list(getattr(module, "flowfabric_settings", lambda: [])() or [])
        except Exception as exc:  # a plugin's own bug must not stop the others
            if self.pm.is_registered(module):
                self.pm.unregister(module)
            info.error = _one_line(f"{type(exc).__name__}: {exc}")
            log.warning("plugin %r from %s could not be registered: %s", name, source,
                        info.error)
            return info
        info.error = self._name_clash(names) or self._settings_problem(settings)
        if info.error:
            log.warning("plugin %r: %s", name, info.error)
            self.pm.unregister(module)
            return info
        for backend in names:
            self.owners[backend] = name
        info.backends, info.settings = names, settings
        return info

    def _name_clash(self, names: list[str]) -> str | None:
        for backend in names:
            if backend in self.owners:
                return (f"backend name {backend!r} is already provided by plugin "
                        f"{self.owners[backend]!r}; rename one of them")
        return None

    def _settings_problem(self, settings: list[Any]) -> str | None:
        """Why these declared settings cannot be accepted, or None: each ``FF_*`` name and
        each flag has one owner, the appliance or one plugin."""
        names, flags = self._setting_owners()
        for setting in settings:
            if not isinstance(setting, Setting):
                return (f"flowfabric_settings returned a {type(setting).__name__}; return "
                        f"appliance.backend.Setting values")
            if not SETTING_NAME.fullmatch(setting.env) or setting.env.startswith(TEST_PREFIX):
                return (f"setting name {setting.env!r} must look like FF_MYSTORE_URL (upper "
                        f"case; FF_TEST_* is reserved for tests)")
            if setting.env in names:
                return (f"setting {setting.env} is already declared by {names[setting.env]}; "
                        f"a setting has one owner: rename yours")
            names[setting.env] = "this plugin"
            if setting.flag is None:
                continue
            if not FLAG.fullmatch(setting.flag):
                return (f"flag {setting.flag!r} of {setting.env} must look like --mystore-url "
                        f"(or be None)")
            if setting.flag in flags:
                return (f"flag {setting.flag} of {setting.env} is already used by "
                        f"{flags[setting.flag]}; rename yours")
            flags[setting.flag] = "this plugin"
        return None

    def _setting_owners(self) -> tuple[dict[str, str], dict[str, str]]:
        """Who declares each setting name and each flag so far."""
        names = {s.env: "the appliance" for s in SETTINGS}
        flags = {f: "the appliance" for f in RESERVED_FLAGS}
        flags |= {s.flag: "the appliance" for s in SETTINGS if s.flag}
        for info in self.infos:
            for setting in info.settings if info.error is None else ():
                names[setting.env] = f"plugin {info.name!r}"
                if setting.flag:
                    flags[setting.flag] = f"plugin {info.name!r}"
        return names, flags

    def declared(self) -> list[Setting]:
        """Every setting the registered plugins declare."""
        return [s for info in self.infos if info.error is None for s in info.settings]

    def broken(self) -> list[str]:
        """Names of the plugins that failed to import or register."""
        return [info.name for info in self.infos if info.error]

    def backend_names(self) -> list[str]:
        return sorted(self.owners)

    def make_backend(self, name: str, config: Any) -> BackendBase:
        if name not in self.owners:
            broken = [i for i in self.infos if i.error]
            hint = "".join(f"; plugin {i.name!r} ({i.source}) failed: {i.error}" for i in broken)
            raise StartupError(
                f"unknown backend {name!r}: set FF_BACKEND / --backend to one of "
                f"{', '.join(self.backend_names()) or '(none installed)'}{hint}")
        try:  # firstresult: the first plugin answering for ``name`` builds it
            backend = self.pm.hook.flowfabric_backend(name=name, config=config)
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
        try:
            _load_path_entry(plugins, Path(entry))
        except OSError as exc:  # e.g. a folder this user may not read
            plugins.infos.append(PluginInfo(name=entry, source="plugin path",
                                            error=f"cannot read it: {exc}; fix FF_PLUGIN_PATH "
                                                  f"/ --plugin-path"))
            log.warning("plugin path entry %s cannot be read: %s", entry, exc)
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
                      error=_one_line(f"import failed: {type(exc).__name__}: {exc}"))
    plugins.infos.append(info)
    log.warning("plugin %r (%s) could not be imported: %s", name, source, info.error)


def _one_line(text: str) -> str:
    """A multi-line message (pluggy's validation errors) as one line."""
    return "; ".join(part.strip() for part in text.splitlines() if part.strip())
