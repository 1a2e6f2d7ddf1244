"""The frozen executable, built once per session (or taken from FF_TEST_FROZEN_BINARY)."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path

import pytest
from support.serve_process import FAST_SCANNERS, ApplianceProcess

ROOT = Path(__file__).parents[2]


@pytest.fixture(scope="session")
def frozen_binary(tmp_path_factory: pytest.TempPathFactory) -> Path:
    prebuilt = os.environ.get("FF_TEST_FROZEN_BINARY")
    if prebuilt:
        return Path(prebuilt)
    dist = tmp_path_factory.mktemp("dist")
    build = subprocess.run(["bash", str(ROOT / "packaging" / "build.sh"), str(dist)],
                           env={**os.environ, "PYTHON": sys.executable},
                           capture_output=True, text=True)
    assert build.returncode == 0, f"packaging/build.sh failed:\n{build.stdout}\n{build.stderr}"
    return dist / "flowfabric"


@pytest.fixture
def run_binary(frozen_binary: Path, tmp_path: Path) -> Iterator[Callable[..., ApplianceProcess]]:
    """``run_binary(args, env=…)``: the frozen appliance in an empty folder, killed at teardown."""
    started: list[ApplianceProcess] = []

    def start(args: Sequence[str] = (), *, env: Mapping[str, str] | None = None,
              wait: bool = True) -> ApplianceProcess:
        app = ApplianceProcess(tmp_path, args, {**FAST_SCANNERS, **(env or {})},
                               command=[str(frozen_binary)])
        started.append(app)
        if wait:
            app.wait_listening()
        return app

    yield start
    for app in started:
        app.kill()
