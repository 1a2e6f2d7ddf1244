"""Every test here runs once per installed backend: this suite is the parity matrix."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from appliance.backend.plugins import get_plugin_manager
from appliance.testing import Harness, open_harness

BACKENDS = get_plugin_manager().backend_names()


@pytest.fixture(params=BACKENDS)
def backend_name(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
def backend_options(backend_name: str, request: pytest.FixtureRequest) -> dict[str, str]:
    """An isolated store for ``backend_name`` (tests/backend_setups/<name>.py)."""
    try:
        return request.getfixturevalue(f"{backend_name}_backend_options")
    except pytest.FixtureLookupError:
        pytest.fail(f"backend {backend_name!r} is installed but tests/backend_setups/ has no "
                    f"{backend_name}_backend_options fixture to give it an isolated store")


@pytest.fixture
async def ff(backend_name: str, backend_options: dict[str, str]) -> AsyncIterator[Harness]:
    async with open_harness(backend_name, backend_options) as harness:
        yield harness
