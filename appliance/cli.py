"""``flowfabric``: serve the appliance, list plugins, print the version."""

from __future__ import annotations

import argparse
import logging
import os
import sys

import trio

from appliance import __version__
from appliance.config import SETTINGS, load_config
from appliance.core.errors import StartupError

EPILOG = "Every setting is also an environment variable:\n" + "\n".join(
    f"  {s.env:<34} {s.help} (default: {s.default or 'unset'})" for s in SETTINGS) + """

Exit codes: 0 drained cleanly, 1 startup or runtime error, 2 usage error,
3 forced exit by a second SIGINT/SIGTERM."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="flowfabric", description="FlowFabric durable execution appliance.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"flowfabric {__version__}")
    sub = parser.add_subparsers(dest="command")
    serve = sub.add_parser("serve", help="run the appliance (the default command)",
                           epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_serve_flags(serve)
    plugins = sub.add_parser("plugins",
                             help="list discovered backend plugins and where they came from")
    plugins.add_argument("--plugin-path", action="append", default=[], metavar="PATH",
                         help="also load plugins from PATH (repeatable; env FF_PLUGIN_PATH)")
    return parser


def add_serve_flags(parser: argparse.ArgumentParser) -> None:
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
    parser.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                        help="any FF_* setting, including a plugin's own (repeatable)")


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in ("serve", "plugins", "-h", "--help", "--version"):
        argv.insert(0, "serve")  # `flowfabric` alone serves, like `flowfabric serve`
    args = build_parser().parse_args(argv)
    if args.command == "plugins":
        return show_plugins(_plugin_path(os.environ.get("FF_PLUGIN_PATH"), args.plugin_path))
    overrides = {s.env: getattr(args, s.env, None) for s in SETTINGS if s.flag}
    overrides["FF_PLUGIN_PATH"] = _plugin_path(os.environ.get("FF_PLUGIN_PATH"),
                                               args.FF_PLUGIN_PATH or [])
    for item in getattr(args, "set", []):
        name, sep, value = item.partition("=")
        if not sep or not name.startswith("FF_"):
            print(f"flowfabric: error: --set expects FF_NAME=value, got {item!r}",
                  file=sys.stderr)
            return 2
        overrides[name] = value
    try:
        config = load_config(os.environ, overrides)
    except StartupError as exc:
        print(f"flowfabric: error: {exc}", file=sys.stderr)
        return 1
    logging.basicConfig(level=config.log_level.upper(), stream=sys.stderr,
                        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s")
    from appliance.supervisor import serve  # imported late: keeps `--help` fast

    code = 1
    try:
        code = trio.run(serve, config)
    except* (StartupError, OSError) as group:  # OSError: e.g. the port is taken
        for exc in _leaves(group):
            print(f"flowfabric: error: {exc}", file=sys.stderr)
    return code


def _leaves(error: BaseException) -> list[BaseException]:
    """The errors inside (possibly nested) exception groups."""
    if isinstance(error, BaseExceptionGroup):
        return [leaf for inner in error.exceptions for leaf in _leaves(inner)]
    return [error]


def _plugin_path(env: str | None, flags: list[str]) -> str:
    """The environment's plugin path, then each --plugin-path flag."""
    return os.pathsep.join([p for p in (env or "").split(os.pathsep) if p] + flags)


def show_plugins(plugin_path: str) -> int:
    from appliance.backend.plugins import get_plugin_manager

    logging.basicConfig(level="ERROR")
    plugins = get_plugin_manager([p for p in plugin_path.split(os.pathsep) if p])
    for info in plugins.infos:
        status = "ok" if info.error is None else f"BROKEN: {info.error}"
        backends = ", ".join(info.backends) or "-"
        version = info.version or "?"
        print(f"{info.name} {version}  backends: {backends}  [{status}]\n    from {info.source}")
    if not plugins.infos:
        print("no plugins found (the in-tree backends register as entry points of the "
              "'flowfabric' distribution; is it installed?)")
    return 0 if any(i.error is None for i in plugins.infos) else 1
