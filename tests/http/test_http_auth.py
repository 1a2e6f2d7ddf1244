"""Bearer auth over the socket: /healthz is open, everything else needs the token."""

import pytest


async def test_healthz_is_open_without_a_token_configured(server):
    reply = await server.client.get("/healthz")
    assert (reply.status_code, reply.json()) == (200, {"status": "ok"})


async def test_healthz_is_open_with_a_token_configured(secured):
    reply = await secured.client.get("/healthz")
    assert (reply.status_code, reply.json()) == (200, {"status": "ok"})


@pytest.mark.parametrize("headers", [
    {},
    {"Authorization": "Bearer wrong"},
    {"Authorization": "Bearer tok2"},
    {"Authorization": "Bearer"},
    {"Authorization": "Basic dG9rOg=="},
    {"Authorization": "tok"},
])
async def test_missing_or_wrong_authorization_is_401(secured, headers):
    reply = await secured.client.get("/v1/executions", params={"partition": 0},
                                     headers=headers)
    assert reply.status_code == 401
    body = reply.json()
    assert (body["kind"], body["retryable"]) == ("unauthorized", False)
    assert "Bearer" in body["error"]


@pytest.mark.parametrize("scheme", ["bearer", "BEARER", "bEaReR"])
async def test_the_bearer_scheme_is_matched_case_insensitively(secured, scheme):
    """RFC 7235: auth schemes are case-insensitive (the token itself is not)."""
    reply = await secured.client.get("/v1/executions", params={"partition": 0},
                                     headers={"Authorization": f"{scheme} tok"})
    assert reply.status_code == 200
    wrong_case = await secured.client.get("/v1/executions", params={"partition": 0},
                                          headers={"Authorization": f"{scheme} TOK"})
    assert wrong_case.status_code == 401


async def test_right_token_is_served(secured):
    reply = await secured.client.get("/v1/executions", params={"partition": 0},
                                     headers=secured.auth())
    assert reply.status_code == 200
    assert reply.json() == {"executions": [], "next_cursor": None}


async def test_writes_need_the_token_too(secured):
    reply = await secured.client.post("/v1/executions", json={})
    assert reply.status_code == 401
    assert await secured.create()


async def test_unknown_path_without_token_is_401(secured):
    reply = await secured.client.get("/v2/nothing")
    assert (reply.status_code, reply.json()["kind"]) == (401, "unauthorized")


async def test_unknown_path_with_token_is_404(secured):
    reply = await secured.client.get("/v2/nothing", headers=secured.auth())
    assert reply.status_code == 404
    body = reply.json()
    assert (body["kind"], body["retryable"]) == ("route_not_found", False)
    assert "/v2/nothing" in body["error"]


async def test_unknown_path_without_auth_configured_is_404(server):
    reply = await server.client.get("/v2/nothing")
    assert (reply.status_code, reply.json()["kind"]) == (404, "route_not_found")


async def test_wrong_method_is_405_with_allow(server):
    reply = await server.client.delete("/v1/executions")
    assert reply.status_code == 405
    assert reply.json()["kind"] == "method_not_allowed"
    allowed = {m.strip() for m in reply.headers["Allow"].split(",")}
    assert {"GET", "POST"} <= allowed
    assert "DELETE" not in allowed


async def test_wrong_method_on_a_worker_route_is_405(server):
    reply = await server.client.get("/v1/workers/w1/claim-task")
    assert reply.status_code == 405
    assert "POST" in reply.headers["Allow"]
    assert reply.headers["content-type"] == "application/json"
