"""One real appliance process per backend, shared by a module's tests."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pytest
from backend_setups.postgres import scratch_database
from backend_setups.valkey import RedisServer, redis_cli
from support.serve_process import FAST_SCANNERS, ApplianceProcess

BACKENDS = ["sqlite", "valkey", "postgres"]


@dataclass
class Live:
    backend: str
    app: ApplianceProcess
    url: str
    port: int

    def client(self, **kwargs: object) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=10, **kwargs)  # type: ignore[arg-type]

    def healthy(self) -> bool:
        try:
            return httpx.get(f"{self.url}/healthz", timeout=5).status_code == 200
        except httpx.HTTPError:
            return False


def start_live(backend: str, tmp: object, valkey: RedisServer | None, pg_url: str | None,
               env: dict[str, str] | None = None) -> Live:
    options = {"FF_BACKEND": backend, **FAST_SCANNERS, **(env or {})}
    if backend == "valkey":
        assert valkey is not None
        redis_cli(valkey.port, "FLUSHALL")
        options["FF_VALKEY_URL"] = valkey.url
    elif backend == "postgres":
        assert pg_url is not None
        options["FF_POSTGRES_URL"] = pg_url
    app = ApplianceProcess(tmp, ("serve", "--listen", "127.0.0.1:0"), options)  # type: ignore[arg-type]
    url = app.wait_listening()
    assert app.port is not None
    return Live(backend, app, url, app.port)


@pytest.fixture(scope="module", params=BACKENDS)
def live(request: pytest.FixtureRequest,
         tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    """A running appliance on each backend in turn (module-scoped)."""
    backend = request.param
    tmp = tmp_path_factory.mktemp(f"live-{backend}")
    if backend == "postgres":
        with scratch_database() as url:
            appliance = start_live(backend, tmp, None, url)
            try:
                yield appliance
            finally:
                appliance.app.kill()
        return
    valkey = request.getfixturevalue("valkey_server") if backend == "valkey" else None
    appliance = start_live(backend, tmp, valkey, None)
    try:
        yield appliance
    finally:
        appliance.app.kill()
