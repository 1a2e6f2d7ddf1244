"""The example third-party backend keeps nothing on disk: every harness starts empty."""

import pytest


@pytest.fixture
def memory_backend_options() -> dict[str, str]:
    return {}
