"""Identifiers: execution ids ``{fp:N}:<uuid>``, bare UUIDs, lanes and worker names."""

from __future__ import annotations

import os
import uuid
from dataclasses import dataclass

from .errors import InvalidInput
from .partitions import flow_partition, solo_partition

_PREFIX = "{fp:"
LANE_MAX_BYTES = 64
WORKER_ID_MAX_BYTES = 256


@dataclass(frozen=True, slots=True)
class ExecutionId:
    """A parsed execution id; ``str()`` gives the canonical wire form."""

    partition: int
    uuid: str

    def __str__(self) -> str:
        return f"{{fp:{self.partition}}}:{self.uuid}"


def parse_execution_id(text: object, field: str = "execution_id") -> ExecutionId:
    """Parse ``{fp:N}:<uuid>``; the partition is read, never recomputed."""
    if not isinstance(text, str):
        raise InvalidInput(f"invalid {field}: expected a string like "
                           f"'{{fp:42}}:550e8400-e29b-41d4-a716-446655440000'")
    close = text.find("}:")
    if not text.startswith(_PREFIX) or close < 0:
        raise InvalidInput(f"invalid {field}: {_shown(text)} must look like '{{fp:N}}:<uuid>' "
                           f"(missing '{{fp:' prefix or '}}:' separator)")
    digits = text[len(_PREFIX):close]
    if not digits.isascii() or not digits.isdigit() or len(digits) > 5 or int(digits) > 65535:
        raise InvalidInput(f"invalid {field}: partition index {_shown(digits)} must be an "
                           f"integer in 0..65535")
    return ExecutionId(int(digits), parse_uuid(text[close + 2:], field))


def _shown(value: object) -> str:
    """A client's value in a message, cut short (a message never echoes kilobytes)."""
    text = repr(value)
    return text if len(text) <= 80 else text[:60] + "…"


def parse_uuid(text: object, field: str) -> str:
    """Validate a hyphenated UUID; returns it in canonical lowercase form."""
    if not isinstance(text, str) or len(text) != 36:
        raise InvalidInput(f"invalid {field}: {_shown(text)} is not a hyphenated UUID "
                           f"like 550e8400-e29b-41d4-a716-446655440000")
    try:
        return str(uuid.UUID(text))
    except ValueError:
        raise InvalidInput(f"invalid {field}: {text!r} is not a hyphenated UUID") from None


def fresh_uuids(n: int) -> list[str]:
    """``n`` random (version 4) UUIDs, from one read of the OS's random source."""
    raw = os.urandom(16 * n).hex()
    out = []
    for i in range(0, 32 * n, 32):
        h = raw[i:i + 32]
        variant = "89ab"[int(h[16], 16) & 3]
        out.append(f"{h[:8]}-{h[8:12]}-4{h[13:16]}-{variant}{h[17:20]}-{h[20:]}")
    return out


def fresh_uuid() -> str:
    return fresh_uuids(1)[0]


def mint_solo(lane_id: str, num_flow_partitions: int) -> str:
    """A fresh id on the lane's partition (all solo executions of a lane share one)."""
    return str(ExecutionId(solo_partition(lane_id, num_flow_partitions), fresh_uuid()))


def mint_for_flow(flow_id: str, num_flow_partitions: int) -> str:
    """A fresh id co-located with ``flow_id``."""
    return str(ExecutionId(flow_partition(flow_id, num_flow_partitions), fresh_uuid()))


def validate_lane(lane: object, field: str = "lane_id") -> str:
    if not isinstance(lane, str):
        raise InvalidInput(f"{field}: must be a string")
    if not lane:
        raise InvalidInput(f"{field}: must not be empty")
    raw = lane.encode("utf-8")
    if len(raw) > LANE_MAX_BYTES:
        raise InvalidInput(f"{field}: exceeds {LANE_MAX_BYTES} bytes (got {len(raw)})")
    for i, b in enumerate(raw):
        if b < 0x20 or b > 0x7E:
            raise InvalidInput(f"{field}: contains a non-printable or non-ASCII byte at index {i}")
    return lane


def validate_worker_name(value: object, field: str) -> str:
    """Worker ids and instance ids: non-empty, ≤256 bytes, no whitespace/control chars."""
    if not isinstance(value, str):
        raise InvalidInput(f"{field}: must be a string")
    if not value:
        raise InvalidInput(f"{field}: must not be empty")
    size = len(value.encode("utf-8"))
    if size > WORKER_ID_MAX_BYTES:
        raise InvalidInput(f"{field}: exceeds {WORKER_ID_MAX_BYTES} bytes (got {size})")
    if any(c.isspace() or ord(c) < 0x20 or ord(c) == 0x7F for c in value):
        raise InvalidInput(f"{field}: must not contain whitespace or control characters")
    return value
