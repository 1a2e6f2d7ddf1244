"""Typed errors: their JSON shape, kinds and HTTP statuses."""

import pytest

from appliance.core import errors as e


def test_to_json_shape():
    assert e.InvalidInput("bad lane").to_json() == {"error": "bad lane", "kind": "invalid_input",
                                                    "retryable": False}


def test_kind_can_be_overridden_per_instance():
    err = e.InvalidInput("x", kind="invalid_json")
    assert err.to_json()["kind"] == "invalid_json"
    assert e.InvalidInput("y").kind == "invalid_input"


def test_details_are_merged_into_the_json():
    body = e.PayloadTooLarge("too big", details={"limit_bytes": 10, "route": "/x"}).to_json()
    assert body == {"error": "too big", "kind": "payload_too_large", "retryable": False,
                    "limit_bytes": 10, "route": "/x"}


def test_retryable_errors_say_so():
    assert e.StoreUnavailable("gone").to_json()["retryable"] is True
    assert e.ShuttingDown("draining").to_json() == {"error": "draining", "kind": "shutting_down",
                                                    "retryable": True}
    assert e.ResourceExhausted("slow down").to_json()["retryable"] is True


def test_execution_not_active_carries_where_it_went():
    err = e.ExecutionNotActive("{fp:1}:x", lifecycle_phase="terminal",
                               terminal_outcome="success", lease_epoch=2, attempt_id="a")
    body = err.to_json()
    assert (body["kind"], body["retryable"]) == ("execution_not_active", False)
    assert {k: body[k] for k in ("lifecycle_phase", "terminal_outcome", "lease_epoch",
                                 "attempt_id")} == {"lifecycle_phase": "terminal",
                                                    "terminal_outcome": "success",
                                                    "lease_epoch": 2, "attempt_id": "a"}
    assert "{fp:1}:x" in body["error"]


def test_execution_not_found_names_the_id():
    err = e.ExecutionNotFound("{fp:1}:x")
    assert (err.status, err.kind, err.execution_id) == (404, "execution_not_found", "{fp:1}:x")
    assert "{fp:1}:x" in err.message


def test_unavailable_names_the_operation():
    err = e.Unavailable("replay", "valkey")
    assert (err.status, err.kind, err.retryable) == (503, "unavailable", False)
    assert "replay" in err.message and "valkey" in err.message


@pytest.mark.parametrize("cls, status, kind", [
    (e.FlowFabricError, 500, "internal"),
    (e.InvalidInput, 400, "invalid_input"),
    (e.InvalidHandle, 400, "invalid_handle"),
    (e.Unauthorized, 401, "unauthorized"),
    (e.NotFound, 404, "not_found"),
    (e.Conflict, 409, "conflict"),
    (e.StaleLease, 409, "stale_lease"),
    (e.LeaseExpired, 409, "lease_expired"),
    (e.LeaseRevoked, 409, "lease_revoked"),
    (e.PayloadTooLarge, 413, "payload_too_large"),
    (e.UnsupportedMediaType, 415, "unsupported_media_type"),
    (e.ResourceExhausted, 429, "resource_exhausted"),
    (e.StoreUnavailable, 503, "store_unavailable"),
    (e.ShuttingDown, 503, "shutting_down"),
])
def test_status_and_kind(cls, status, kind):
    err = cls("msg")
    assert (err.status, err.kind) == (status, kind)
    assert isinstance(err, e.FlowFabricError)


def test_startup_error_is_not_a_request_error():
    assert not issubclass(e.StartupError, e.FlowFabricError)
