"""Shared fixtures: every ``<name>_backend_options`` fixture from tests/backend_setups/."""

import importlib
import pkgutil
from pathlib import Path

for _module in pkgutil.iter_modules([str(Path(__file__).parent / "backend_setups")]):
    _mod = importlib.import_module(f"backend_setups.{_module.name}")
    globals().update({k: v for k, v in vars(_mod).items() if k.endswith("_backend_options")
                      or k.endswith("_server")})
