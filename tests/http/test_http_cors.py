"""CORS: preflights and response headers for configured origins only."""

OK, EVIL = "https://ok.example", "https://evil.example"


def preflight_headers(origin):
    return {"Origin": origin, "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "content-type"}


async def test_preflight_from_allowed_origin(start_server):
    server = await start_server(FF_CORS_ORIGINS=OK)
    reply = await server.client.options("/v1/executions", headers=preflight_headers(OK))
    assert reply.status_code == 204
    assert reply.headers["Access-Control-Allow-Origin"] == OK
    allowed = reply.headers["Access-Control-Allow-Headers"].lower()
    assert "content-type" in allowed
    assert "authorization" not in allowed
    assert "POST" in reply.headers["Access-Control-Allow-Methods"]


async def test_preflight_allows_authorization_when_a_token_is_set(start_server):
    server = await start_server(FF_CORS_ORIGINS=OK, FF_API_TOKEN="tok")
    reply = await server.client.options("/v1/executions", headers=preflight_headers(OK))
    assert reply.status_code == 204
    assert reply.headers["Access-Control-Allow-Origin"] == OK
    assert "authorization" in reply.headers["Access-Control-Allow-Headers"].lower()


async def test_preflight_from_disallowed_origin_gets_no_allow_origin(start_server):
    server = await start_server(FF_CORS_ORIGINS=OK)
    reply = await server.client.options("/v1/executions", headers=preflight_headers(EVIL))
    assert "Access-Control-Allow-Origin" not in reply.headers
    assert "Access-Control-Allow-Headers" not in reply.headers


async def test_no_cors_configured_means_no_allow_origin(server):
    reply = await server.client.options("/v1/executions", headers=preflight_headers(OK))
    assert "Access-Control-Allow-Origin" not in reply.headers
    get = await server.client.get("/healthz", headers={"Origin": OK})
    assert "Access-Control-Allow-Origin" not in get.headers


async def test_get_from_allowed_origin_carries_allow_origin(start_server):
    server = await start_server(FF_CORS_ORIGINS=f"https://other.example, {OK}")
    reply = await server.client.get("/healthz", headers={"Origin": OK})
    assert reply.status_code == 200
    assert reply.headers["Access-Control-Allow-Origin"] == OK
    assert "Origin" in reply.headers["Vary"]


async def test_get_from_disallowed_origin_has_no_allow_origin(start_server):
    server = await start_server(FF_CORS_ORIGINS=OK)
    reply = await server.client.get("/healthz", headers={"Origin": EVIL})
    assert reply.status_code == 200
    assert "Access-Control-Allow-Origin" not in reply.headers


async def test_wildcard_origin(start_server):
    server = await start_server(FF_CORS_ORIGINS="*")
    reply = await server.client.options("/v1/executions", headers=preflight_headers(EVIL))
    assert reply.headers["Access-Control-Allow-Origin"] == "*"
    get = await server.client.get("/healthz", headers={"Origin": EVIL})
    assert get.headers["Access-Control-Allow-Origin"] == "*"


async def test_error_responses_carry_allow_origin_so_browsers_can_read_them(start_server):
    server = await start_server(FF_CORS_ORIGINS=OK, FF_API_TOKEN="tok")
    reply = await server.client.get("/v1/executions", params={"partition": 0},
                                    headers={"Origin": OK})
    assert reply.status_code == 401
    assert reply.headers["Access-Control-Allow-Origin"] == OK


async def test_authorised_cross_origin_request_works(start_server):
    server = await start_server(FF_CORS_ORIGINS=OK, FF_API_TOKEN="tok")
    reply = await server.client.post("/v1/executions", json={},
                                     headers={"Origin": OK, **server.auth()})
    assert reply.status_code == 201
    assert reply.headers["Access-Control-Allow-Origin"] == OK
