"""Reading one JSON object field by field, naming the path in every error and
refusing fields nobody reads (no field is accepted and then ignored)."""

from __future__ import annotations

import base64
import binascii
import json
import math
from typing import Any

from .errors import InvalidInput

U32_MAX = 2**32 - 1
MS_MAX = 2**53  # JSON-safe integer milliseconds
#: The latest instant a time field may name (9999-12-31T23:59:59.999Z), and the longest
#: duration: sums of the two stay exact in a double (Lua, JavaScript) with room to spare.
TIME_MAX_MS = 253_402_300_799_999
DURATION_MAX_MS = 3_155_760_000_000  # 100 years


class Fields:
    """``lenient`` reads data we stored ourselves (perhaps under older, looser rules): a
    number out of range is clamped into it, a value of the wrong type reads as the
    default, and unknown fields are ignored, so stored data never turns into an error."""

    def __init__(self, obj: object, path: str, *, kind: str = "invalid_input",
                 lenient: bool = False) -> None:
        if not isinstance(obj, dict):
            if lenient:
                obj = {}
            else:
                raise InvalidInput(f"{path or 'the request body'}: must be a JSON object",
                                   kind=kind)
        self.obj, self.path, self.kind, self.lenient = obj, path, kind, lenient
        self.seen: set[str] = set()

    def fail(self, key: str, why: str) -> InvalidInput:
        return InvalidInput(f"{self._name(key)}: {why}", kind=self.kind)

    def _name(self, key: str) -> str:
        return f"{self.path}.{key}" if self.path else key

    def get(self, key: str) -> Any:
        self.seen.add(key)
        return self.obj.get(key)

    def int(self, key: str, default: int | None = None, *, lo: int = 0,
            hi: int = TIME_MAX_MS) -> int | None:
        value = self.get(key)
        if value is None:
            return default
        if self.lenient:
            return _clamped(value, lo, hi, default, int)
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.fail(key, f"must be an integer, got {_shown(value)}")
        if not lo <= value <= hi:
            raise self.fail(key, f"must be an integer in {lo}..{hi}, got {_shown(value)}")
        return value

    def number(self, key: str, default: float, *, lo: float, hi: float) -> float:
        value = self.get(key)
        if value is None:
            return default
        if self.lenient:
            return _clamped(value, lo, hi, default, float)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise self.fail(key, f"must be a number, got {_shown(value)}")
        if isinstance(value, int) and not -MS_MAX <= value <= MS_MAX:
            raise self.fail(key, f"must be a number in {lo:g}..{hi:g}, got {_shown(value)}")
        number = float(value)
        if not math.isfinite(number) or not lo <= number <= hi:
            raise self.fail(key, f"must be a number in {lo:g}..{hi:g}, got {number!r}")
        return number

    def bool(self, key: str, default: bool) -> bool:
        value = self.get(key)
        if value is None:
            return default
        if not isinstance(value, bool):
            if self.lenient:
                return default
            raise self.fail(key, "must be true or false")
        return value

    def str(self, key: str, default: str | None = None, *, max_len: int = 65_536) -> str | None:
        value = self.get(key)
        if value is None:
            return default
        if not isinstance(value, str):
            if self.lenient:
                return default
            raise self.fail(key, f"must be a string, got {_shown(value)}")
        if len(value) > max_len:
            raise self.fail(key, f"must be at most {max_len} characters")
        return value

    def required_str(self, key: str, *, max_len: int = 65_536) -> str:
        value = self.str(key, max_len=max_len)
        if value is None:
            raise self.fail(key, "is required")
        return value

    def bytes(self, key: str) -> bytes | None:
        """Bytes as the original's integer array under ``key`` or base64 under ``key_b64``."""
        raw, b64 = self.get(key), self.get(key + "_b64")
        if raw is not None and b64 is not None:
            raise self.fail(key, f"give either {key} or {key}_b64, not both")
        if b64 is not None:
            if not isinstance(b64, str):
                raise self.fail(key + "_b64", "must be a base64 string")
            try:
                return base64.b64decode(b64, validate=True)
            except (binascii.Error, ValueError):
                raise self.fail(key + "_b64", "is not valid base64") from None
        if raw is None:
            return None
        if not isinstance(raw, list):
            raise self.fail(key, "must be an array of integers 0..255 (or use "
                                 f"{key}_b64 for base64)")
        try:
            return bytes(raw)
        except (TypeError, ValueError):
            raise self.fail(key, "must be an array of integers 0..255") from None

    def str_map(self, key: str) -> dict[str, str]:
        value = self.get(key)
        if value is None:
            return {}
        if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
            raise self.fail(key, "must be an object of string values")
        return value

    def done(self) -> None:
        if self.lenient:
            return
        extra = sorted(set(self.obj) - self.seen)
        if extra:
            where = f" in {self.path}" if self.path else ""
            raise InvalidInput(f"unknown field {extra[0]!r}{where}; remove it (see the API "
                               f"reference in spec/http-api.md)", kind=self.kind)


def _shown(value: Any) -> str:
    """A client's value, short enough to quote in a message."""
    text = json.dumps(value, ensure_ascii=False) if not isinstance(value, int) else str(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _clamped(value: Any, lo: float, hi: float, default: Any, kind: type) -> Any:
    """A stored number forced into ``lo..hi``; anything that is not a finite number reads
    as ``default``."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return default
    if isinstance(value, float) and not math.isfinite(value):
        return default
    return kind(min(max(value, lo), hi))
