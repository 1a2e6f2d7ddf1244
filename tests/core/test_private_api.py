"""The private parts of our dependencies the appliance leans on are still there and still
shaped as we use them. pyproject.toml bounds those dependencies' versions; when a new
release changes one of these, this test names what to check before raising the bound."""

from __future__ import annotations

import inspect

import pytest


def params(fn: object) -> list[str]:
    return list(inspect.signature(fn).parameters)  # type: ignore[arg-type]


def test_quart_trio_sends_a_response_the_way_our_shielded_connection_overrides():
    from quart_trio.asgi import TrioASGIHTTPConnection

    assert params(TrioASGIHTTPConnection.handle_request) == ["self", "nursery", "request",
                                                             "send"], (
        "quart-trio changed TrioASGIHTTPConnection.handle_request, which "
        "appliance/http/connection.py overrides; re-check it, then the bound in pyproject.toml")
    assert params(TrioASGIHTTPConnection._send_response) == ["self", "send", "response"]


def test_hypercorn_connection_internals_our_listener_builds_on():
    from hypercorn.protocol.h11 import H11Protocol
    from hypercorn.trio.tcp_server import TCPServer

    why = ("hypercorn changed a part of TCPServer/H11Protocol that appliance/http/server.py "
           "overrides or calls; re-check it, then the bound in pyproject.toml")
    assert params(TCPServer.__init__) == ["self", "app", "config", "context", "state",
                                          "stream"], why
    assert params(TCPServer.protocol_send) == ["self", "event"], why
    assert params(TCPServer._read_data) == ["self"], why
    assert "self.idle_task" in inspect.getsource(TCPServer.__init__), why
    assert params(H11Protocol._send_error_response) == ["self", "status_code"], why
    assert params(H11Protocol._send_h11_event) == ["self", "event"], why


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_psycopg_waits_through_a_loop_lookup_we_can_replace():
    import psycopg.waiting

    assert hasattr(psycopg.waiting, "get_running_loop"), (
        "psycopg no longer looks the asyncio loop up through psycopg.waiting.get_running_loop,"
        " which plugins/postgres/backend.py replaces for trio-asyncio; re-check it, then the "
        "bound in pyproject.toml")
