"""Lease handles: encode/decode round trip and rejection of garbage."""

import base64

import pytest

from appliance.core.errors import InvalidHandle, InvalidInput
from appliance.core.handle import Fence, Handle, decode_handle

HANDLE = Handle("{fp:86}:550e8400-e29b-41d4-a716-446655440000", 3,
                Fence("lease-1", 7, "attempt-1"))


def test_round_trip():
    text = HANDLE.encode()
    assert text.startswith("ffh1.")
    assert "=" not in text
    assert decode_handle(text) == HANDLE


def test_handle_is_url_safe():
    assert all(c.isalnum() or c in "-_." for c in HANDLE.encode())


def _wrap(payload: bytes) -> str:
    return "ffh1." + base64.urlsafe_b64encode(payload).rstrip(b"=").decode()


@pytest.mark.parametrize("garbage", [
    None, 42, "", "garbage", "ffh2.abc", "ffh1.", "ffh1.!!!!", "ffh1.e30",
    _wrap(b"not json"), _wrap(b'["a",1,"b","c"]'), _wrap(b'{"a":1}'),
    _wrap(b'["eid","0","att","lease",1]'), _wrap(b'["eid",0,"att","lease","1"]'),
    _wrap(b'[1,0,"att","lease",1]'),
])
def test_garbage_is_an_invalid_handle(garbage):
    with pytest.raises(InvalidHandle) as err:
        decode_handle(garbage)
    assert err.value.kind == "invalid_handle"
    assert err.value.status == 400
    assert isinstance(err.value, InvalidInput)
    assert "handle" in err.value.message


def test_truncated_handle_is_rejected():
    with pytest.raises(InvalidHandle):
        decode_handle(HANDLE.encode()[:-6])
