"""Typed errors: their JSON shape, kinds and HTTP statuses."""

import pytest

from appliance.core import errors as e


def test_to_json_shape():
    assert e.InvalidInput("bad lane").to_json() == {"error": "bad lane", "kind": "invalid_input",
                                                    "retryable": False}


def test_each_kind_is_its_own_class():
    assert e.InvalidJson("x").to_json()["kind"] == "invalid_json"
    assert e.InvalidInput("y").kind == "invalid_input"
    assert e.KINDS["invalid_json"] is e.InvalidJson


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
    err = e.ExecutionNotActive.of(execution_id="{fp:1}:x", lifecycle_phase="terminal",
                                  terminal_outcome="success", lease_epoch=2, attempt_id="a")
    body = err.to_json()
    assert (body["kind"], body["retryable"]) == ("execution_not_active", False)
    assert {k: body[k] for k in ("lifecycle_phase", "terminal_outcome", "lease_epoch",
                                 "attempt_id")} == {"lifecycle_phase": "terminal",
                                                    "terminal_outcome": "success",
                                                    "lease_epoch": 2, "attempt_id": "a"}
    assert "{fp:1}:x" in body["error"]


def test_execution_not_found_names_the_id():
    err = e.ExecutionNotFound.of(execution_id="{fp:1}:x")
    assert (err.status, err.kind, err.details) == (404, "execution_not_found",
                                                   {"execution_id": "{fp:1}:x"})
    assert "{fp:1}:x" in err.message


def test_a_kind_and_details_from_a_store_become_the_same_error_as_in_python():
    raised = e.StaleLease.of(execution_id="{fp:1}:x", held=1, lease_epoch=2)
    reported = e.error_from("stale_lease", {"execution_id": "{fp:1}:x", "held": 1,
                                            "lease_epoch": 2})
    assert type(reported) is e.StaleLease and reported.message == raised.message


def test_an_unknown_kind_from_a_store_is_an_internal_error():
    assert e.error_from("no_such_kind", {}).status == 500


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
