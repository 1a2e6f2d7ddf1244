"""Shared fixtures: every ``<name>_backend_options`` fixture from tests/backend_setups/."""

import pkgutil
import subprocess
import sys
from pathlib import Path

import pytest

#: Each module of tests/backend_setups/ is a fixture plugin (``<name>_backend_options``).
pytest_plugins = [f"backend_setups.{m.name}" for m in
                  pkgutil.iter_modules([str(Path(__file__).parent / "backend_setups")])]


@pytest.fixture(scope="session")
def example_wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A wheel of the example third-party backend (examples/memory-backend)."""
    out = tmp_path_factory.mktemp("wheels")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(out),
                    str(Path(__file__).parents[1] / "examples" / "memory-backend")], check=True)
    return next(out.glob("flowfabric_memory-*.whl"))
