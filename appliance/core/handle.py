"""Lease handles: the opaque string a worker carries from claim to complete.

A handle names the execution and the fence (lease id, lease epoch, attempt id);
the server verifies it against the store on every use, so a forged or stale
handle can never act on the current lease.
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass

from .errors import InvalidHandle

_PREFIX = "ffh1."


@dataclass(frozen=True, slots=True)
class Fence:
    lease_id: str
    lease_epoch: int
    attempt_id: str


@dataclass(frozen=True, slots=True)
class Handle:
    execution_id: str
    attempt_index: int
    fence: Fence

    def encode(self) -> str:
        raw = json.dumps([self.execution_id, self.attempt_index, self.fence.attempt_id,
                          self.fence.lease_id, self.fence.lease_epoch],
                         separators=(",", ":")).encode()
        return _PREFIX + base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def decode_handle(text: object) -> Handle:
    if not isinstance(text, str) or not text.startswith(_PREFIX):
        raise InvalidHandle("handle: not a lease handle; pass the 'handle' string "
                            "returned by claim-task unchanged")
    body = text[len(_PREFIX):]
    try:
        raw = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
        eid, index, attempt_id, lease_id, epoch = json.loads(raw)
    except (binascii.Error, ValueError, TypeError):
        raise InvalidHandle("handle: corrupted; pass the 'handle' string returned by "
                            "claim-task unchanged") from None
    if not (isinstance(eid, str) and isinstance(index, int) and isinstance(attempt_id, str)
            and isinstance(lease_id, str) and isinstance(epoch, int)):
        raise InvalidHandle("handle: corrupted fields")
    return Handle(eid, index, Fence(lease_id, epoch, attempt_id))
