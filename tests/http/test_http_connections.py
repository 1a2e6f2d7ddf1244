"""Connections as a careful operator expects: one bad connection ends only itself,
stalled uploads and headers time out, past the cap a client gets a prompt 503, and a
peer that hangs up frees its socket at once."""

from __future__ import annotations

import os
import socket
import struct

import httpx
import pytest
import trio

MALFORMED_CHUNK = (b"POST /v1/executions HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
                   b"Content-Type: application/json\r\n\r\nzz\r\n{}\r\n0\r\n\r\n")


def port_of(server) -> int:
    return int(server.url.rsplit(":", 1)[1])


async def send_raw(port: int, data: bytes, *, read: bool = True,
                   timeout: float = 5.0) -> bytes:
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    got = b""
    async with stream:
        await stream.send_all(data)
        if read:
            with trio.move_on_after(timeout):
                while chunk := await stream.receive_some(65536):
                    got += chunk
    return got


async def test_malformed_chunked_requests_on_fresh_connections_do_not_kill_the_server(server):
    """The defect: an illegal chunk-size line arriving while the answer (here a 404,
    given before the body is read) was being sent made hypercorn send its error answer
    while another task was shutting the socket; the BusyResourceError escaped into the
    root nursery and the appliance exited with code 1 within a second."""
    port = port_of(server)

    async def hammer() -> None:
        for i in range(60):
            stream = await trio.open_tcp_stream("127.0.0.1", port)
            async with stream:
                await stream.send_all(b"POST /nope HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: "
                                      b"chunked\r\n\r\n2\r\n{}\r\n")
                await trio.sleep(0.001 * (i % 3))
                await stream.send_all(b"zz\r\n")

    async with trio.open_nursery() as nursery:
        for _ in range(8):
            nursery.start_soon(hammer)
    answer = await send_raw(port, MALFORMED_CHUNK)
    assert answer.startswith(b"HTTP/1.1 400 ")
    assert b'"kind":"malformed_request"' in answer
    assert (await server.client.get("/healthz")).status_code == 200


@pytest.mark.parametrize("data", [
    b"GET /healthz HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n",  # h11 hints 501
    b"GET /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
    b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03" + bytes(32),  # TLS on a plain port
])
async def test_requests_that_are_not_http_get_a_4xx_json_answer_not_5xx(server, data):
    answer = await send_raw(port_of(server), data)
    status = int(answer.split(b" ", 2)[1])
    assert 400 <= status < 500, answer
    assert (await server.client.get("/healthz")).status_code == 200


async def test_a_reset_mid_request_leaves_the_server_serving(server):
    port = port_of(server)
    for _ in range(50):
        sock = socket.create_connection(("127.0.0.1", port))
        sock.sendall(b"POST /v1/workers/w/claim-task HTTP/1.1\r\nHost: x\r\n"
                     b"Content-Type: application/json\r\nContent-Length: 60\r\n\r\n{\"lane")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.close()
    assert (await server.client.get("/healthz")).status_code == 200


async def test_a_stalled_upload_is_closed_after_the_body_timeout_with_a_json_408(start_server):
    server = await start_server(FF_BODY_TIMEOUT_MS="300")
    start = trio.current_time()
    answer = await send_raw(port_of(server), b"POST /v1/executions HTTP/1.1\r\nHost: x\r\n"
                            b"Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{")
    assert answer.startswith(b"HTTP/1.1 408 "), answer
    assert b'"kind":"body_timeout"' in answer and b"FF_BODY_TIMEOUT_MS" in answer
    assert trio.current_time() - start < 3  # closed, not held


async def test_half_sent_headers_are_closed_after_the_header_timeout(start_server):
    server = await start_server(FF_HEADER_TIMEOUT_MS="300")
    start = trio.current_time()
    answer = await send_raw(port_of(server), b"POST /v1/executions HTTP/1.1\r\nHost: x\r\n")
    assert answer == b""  # closed without an answer: no request arrived
    assert trio.current_time() - start < 3


async def test_past_the_connection_cap_a_client_gets_a_prompt_503_then_service(start_server):
    server = await start_server(FF_MAX_CONNECTIONS="4", FF_HEADER_TIMEOUT_MS="60000")
    port = port_of(server)
    idle = [socket.create_connection(("127.0.0.1", port)) for _ in range(4)]
    try:
        await trio.sleep(0.1)  # let the server accept them (they hold every slot)
        with trio.fail_after(2):
            async with httpx.AsyncClient(base_url=server.url) as fresh:
                reply = await fresh.get("/healthz")
        assert reply.status_code == 503
        assert reply.json() == {"error": reply.json()["error"], "kind": "overloaded",
                                "retryable": True}
        assert "FF_MAX_CONNECTIONS" in reply.json()["error"]
        assert reply.headers["retry-after"] == "1"
    finally:
        for sock in idle:
            sock.close()
    with trio.fail_after(5):
        while True:  # the slots come back as soon as those peers hang up
            async with httpx.AsyncClient(base_url=server.url) as fresh:
                if (await fresh.get("/healthz")).status_code == 200:
                    break
            await trio.sleep(0.02)
    assert server.running.http.rejected >= 1


def open_descriptors() -> int:
    return len(os.listdir("/proc/self/fd"))


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="needs /proc")
async def test_a_peer_that_hangs_up_frees_its_socket_at_once(server):
    """hypercorn held each closed connection (CLOSE-WAIT) until its keep-alive timer ran
    out; connections piled up for 5 s each."""
    port = port_of(server)
    await server.client.get("/healthz")
    before = open_descriptors()
    for _ in range(100):
        socket.create_connection(("127.0.0.1", port)).close()
    with trio.fail_after(2):
        while open_descriptors() > before + 2:
            await trio.sleep(0.01)
    assert server.running.http.open <= 2
