"""Fixtures that run the appliance as a real subprocess, always killed at teardown."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from pathlib import Path

import httpx
import pytest
from support.serve_process import FAST_SCANNERS, ApplianceProcess

EPHEMERAL = ("serve", "--listen", "127.0.0.1:0")

Launch = Callable[..., ApplianceProcess]


@pytest.fixture
def launch(tmp_path: Path) -> Iterator[Launch]:
    """``launch(args=EPHEMERAL, env=..., cwd=tmp_path, wait=True)`` starts an appliance
    with fast scanners and, unless ``wait=False``, waits for its "listening on" line."""
    started: list[ApplianceProcess] = []

    def _launch(args: Sequence[str] = EPHEMERAL, *, env: Mapping[str, str] | None = None,
                cwd: Path | None = None, wait: bool = True) -> ApplianceProcess:
        app = ApplianceProcess(cwd or tmp_path, args, {**FAST_SCANNERS, **(env or {})})
        started.append(app)
        if wait:
            app.wait_listening()
        return app

    yield _launch
    for app in started:
        app.kill()


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=30) as http:
        yield http
