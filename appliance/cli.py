"""``flowfabric``: serve the appliance, list plugins, print the version."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Iterable
from functools import partial
from typing import TYPE_CHECKING

import trio

from appliance import __version__
from appliance.config import SETTINGS, check_names, load_config
from appliance.core.errors import StartupError
from appliance.core.settings import Setting

if TYPE_CHECKING:
    from appliance.backend.plugins import PluginInfo, Plugins

EXIT_CODES = """Exit codes: 0 drained cleanly, 1 startup or runtime error, 2 usage error,
3 forced exit by a second SIGINT/SIGTERM."""
COMMANDS = ("serve", "plugins", "bench", "-h", "--help", "--version")


def build_parser(plugins: Plugins | None = None) -> argparse.ArgumentParser:
    """The command line; ``plugins`` adds their flags and lists their settings in --help."""
    epilog = _epilog(plugins)
    parser = argparse.ArgumentParser(
        prog="flowfabric", description="FlowFabric durable execution appliance.",
        epilog=epilog, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"flowfabric {__version__}")
    sub = parser.add_subparsers(dest="command")
    serve = sub.add_parser("serve", help="run the appliance (the default command)",
                           epilog=epilog, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_serve_flags(serve, plugins)
    sub.add_parser("bench", help="measure throughput and latency (flowfabric bench --help)",
                   add_help=False)
    listing = sub.add_parser("plugins",
                             help="list discovered backend plugins and where they came from")
    listing.add_argument("--plugin-path", action="append", default=[], metavar="PATH",
                         help="also load plugins from PATH (repeatable; env FF_PLUGIN_PATH)")
    return parser


def add_serve_flags(parser: argparse.ArgumentParser, plugins: Plugins | None = None) -> None:
    for setting in SETTINGS:
        if setting.flag is None:
            continue
        if setting.env == "FF_INSECURE":
            parser.add_argument(setting.flag, action="store_const", const="true",
                                dest=setting.env, help=setting.help)
        elif setting.env == "FF_PLUGIN_PATH":
            parser.add_argument(setting.flag, action="append", dest=setting.env,
                                metavar="PATH", help=f"{setting.help} (repeatable; env "
                                f"{setting.env})")
        else:
            parser.add_argument(setting.flag, dest=setting.env, metavar="VALUE",
                                help=f"{setting.help} (env {setting.env})")
    for setting in _plugin_flags(plugins):
        parser.add_argument(setting.flag, dest=setting.env, metavar="VALUE",
                            help=f"{setting.help} (env {setting.env})")
    parser.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                        help="any FF_* setting, including a plugin's own (repeatable)")


def _plugin_flags(plugins: Plugins | None) -> list[Setting]:
    """Plugin settings with a flag (registration already refused clashing flags)."""
    return [s for s in (plugins.declared() if plugins else ()) if s.flag]


def _epilog(plugins: Plugins | None) -> str:
    lines = ["Every setting is also an environment variable (or --set NAME=VALUE):"]
    lines += [_setting_line(s, "  ") for s in SETTINGS]
    if plugins is not None:
        lines += ["", _backends_line(plugins), "Settings of each backend plugin:"]
        lines += [line for info in plugins.infos for line in _plugin_lines(info)]
    return "\n".join(lines) + "\n\n" + EXIT_CODES


def _setting_line(setting: Setting, indent: str) -> str:
    return (f"{indent}{setting.env:<{36 - len(indent)}} {setting.help} "
            f"(default: {setting.default or 'unset'})")


def _backends_line(plugins: Plugins) -> str:
    names = ", ".join(plugins.backend_names()) or "none"
    return f"Backends found: {names} (choose one with --backend / FF_BACKEND)"


def _plugin_lines(info: PluginInfo) -> list[str]:
    if info.error:
        return [f"  {info.name}: BROKEN, not loaded ('flowfabric plugins' says why)"]
    provides = f"backends: {', '.join(info.backends)}" if info.backends else "no backend"
    if not info.settings:
        return [f"  {info.name} ({provides}): no settings"]
    return [f"  {info.name} ({provides}):"] + [_setting_line(s, "    ") for s in info.settings]


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in COMMANDS:
        argv.insert(0, "serve")  # `flowfabric` alone serves, like `flowfabric serve`
    if argv[0] == "--version":
        build_parser().parse_args(argv)  # prints the version and exits
    if argv[0] == "bench":
        from appliance import bench  # imported late: keeps `--help` fast

        return bench.run(argv[1:])
    plugins = load_plugins(_early_plugin_path(argv))
    args = build_parser(plugins).parse_args(argv)
    if args.command == "plugins":
        return show_plugins(plugins)
    return serve(args, plugins, argv)


def serve(args: argparse.Namespace, plugins: Plugins, argv: list[str]) -> int:
    """Check every setting, then run the appliance until it drains (``--processes N``: N
    of them, from one parent)."""
    overrides = {s.env: getattr(args, s.env, None) for s in (*SETTINGS, *plugins.declared())
                 if s.flag}
    overrides["FF_PLUGIN_PATH"] = _plugin_path(os.environ.get("FF_PLUGIN_PATH"),
                                               args.FF_PLUGIN_PATH or [])
    set_names: list[str] = []
    for item in args.set:
        name, sep, value = item.partition("=")
        if not sep or not name.startswith("FF_"):
            print(f"flowfabric: error: --set expects FF_NAME=value, got {item!r}",
                  file=sys.stderr)
            return 2
        overrides[name] = value
        set_names.append(name)
    try:
        check_names(os.environ, set_names, plugins.declared(), plugins.broken())
        config = load_config(os.environ, overrides)
    except StartupError as exc:
        _report([exc])
        return 1
    from appliance import processes

    pid = "[%(process)d]" if processes.is_child() else ""
    logging.basicConfig(level=config.log_level.upper(), stream=sys.stderr,
                        format=f"%(asctime)s %(levelname)-7s %(name)s{pid}: %(message)s")
    for info in plugins.infos:
        if info.error:
            logging.getLogger("flowfabric.plugins").warning(
                "plugin %r (%s) is not loaded: %s", info.name, info.source, info.error)
    code = 1
    try:
        if config.processes > 1:
            processes.check_shared(config, plugins.make_backend(config.backend, config).shared)
            code = trio.run(processes.run, config, argv)
        else:
            from appliance.supervisor import (
                serve as run,  # imported late: fast `--help`
            )

            code = trio.run(partial(run, config, plugins=plugins))
    except* (StartupError, OSError) as group:  # OSError: e.g. the port is taken
        _report(_leaves(group))
    return code


def _report(errors: Iterable[BaseException]) -> None:
    """Each distinct error as one ``flowfabric: error:`` line, without a traceback."""
    seen: list[str] = []
    for error in errors:
        text = "; ".join(part.strip() for part in str(error).splitlines() if part.strip())
        if text not in seen:
            seen.append(text)
            print(f"flowfabric: error: {text}", file=sys.stderr)


def _leaves(error: BaseException) -> list[BaseException]:
    """The errors inside (possibly nested) exception groups."""
    if isinstance(error, BaseExceptionGroup):
        return [leaf for inner in error.exceptions for leaf in _leaves(inner)]
    return [error]


def _plugin_path(env: str | None, flags: list[str]) -> str:
    """The environment's plugin path, then each --plugin-path flag."""
    return os.pathsep.join([p for p in (env or "").split(os.pathsep) if p] + flags)


def _early_plugin_path(argv: list[str]) -> list[str]:
    """The plugin path, read before the real parse: the plugins found there add flags to
    ``serve`` and settings to ``--help``."""
    early = argparse.ArgumentParser(add_help=False, exit_on_error=False)
    early.add_argument("--plugin-path", action="append", default=[])
    early.add_argument("--set", action="append", default=[])
    try:
        known, _ = early.parse_known_args(argv)
    except argparse.ArgumentError:  # the real parse reports it
        known = argparse.Namespace(plugin_path=[], set=[])
    path = _plugin_path(os.environ.get("FF_PLUGIN_PATH"), known.plugin_path)
    for item in known.set:
        name, sep, value = item.partition("=")
        if name == "FF_PLUGIN_PATH" and sep:
            path = value  # like --set in `serve`: it replaces the path
    return [p for p in path.split(os.pathsep) if p]


def load_plugins(plugin_path: list[str]) -> Plugins:
    """Discover the plugins quietly: ``flowfabric plugins`` lists the broken ones and
    ``serve`` logs them once logging is set up."""
    from appliance.backend.plugins import get_plugin_manager

    quiet = logging.getLogger("flowfabric.plugins")
    level = quiet.level
    quiet.setLevel(logging.CRITICAL)
    try:
        return get_plugin_manager(plugin_path)
    finally:
        quiet.setLevel(level)


def show_plugins(plugins: Plugins) -> int:
    for info in plugins.infos:
        backends = ", ".join(info.backends) or "-"
        version = info.version or "?"
        print(f"{info.name} {version}  backends: {backends}  [{_status(info)}]\n"
              f"    from {info.source}")
        if info.settings:
            print(f"    settings: {', '.join(s.env for s in info.settings)}")
    if not plugins.infos:
        print("no plugins found (the in-tree backends register as entry points of the "
              "'flowfabric' distribution; is it installed?)")
    return 0 if any(i.error is None and i.backends for i in plugins.infos) else 1


def _status(info: PluginInfo) -> str:
    if info.error is not None:
        return f"BROKEN: {info.error}"
    return "ok" if info.backends else "ok: registers no backend"
