"""The embedded store needs nothing but a fresh file."""

from pathlib import Path

import pytest


@pytest.fixture
def sqlite_backend_options(tmp_path: Path) -> dict[str, str]:
    return {"FF_SQLITE_PATH": str(tmp_path / "conformance.db")}
