"""Reading one JSON object field by field, naming the path in every error and
refusing fields nobody reads (no field is accepted and then ignored)."""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any

from .errors import InvalidInput

U32_MAX = 2**32 - 1
MS_MAX = 2**53  # JSON-safe integer milliseconds


class Fields:
    def __init__(self, obj: object, path: str, *, kind: str = "invalid_input") -> None:
        if not isinstance(obj, dict):
            raise InvalidInput(f"{path or 'the request body'}: must be a JSON object", kind=kind)
        self.obj, self.path, self.kind = obj, path, kind
        self.seen: set[str] = set()

    def fail(self, key: str, why: str) -> InvalidInput:
        return InvalidInput(f"{self._name(key)}: {why}", kind=self.kind)

    def _name(self, key: str) -> str:
        return f"{self.path}.{key}" if self.path else key

    def get(self, key: str) -> Any:
        self.seen.add(key)
        return self.obj.get(key)

    def int(self, key: str, default: int | None = None, *, lo: int = 0,
            hi: int = MS_MAX) -> int | None:
        value = self.get(key)
        if value is None:
            return default
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.fail(key, f"must be an integer, got {json.dumps(value)}")
        if not lo <= value <= hi:
            raise self.fail(key, f"must be in {lo}..{hi}, got {value}")
        return value

    def number(self, key: str, default: float) -> float:
        value = self.get(key)
        if value is None:
            return default
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise self.fail(key, f"must be a number, got {json.dumps(value)}")
        return float(value)

    def bool(self, key: str, default: bool) -> bool:
        value = self.get(key)
        if value is None:
            return default
        if not isinstance(value, bool):
            raise self.fail(key, "must be true or false")
        return value

    def str(self, key: str, default: str | None = None, *, max_len: int = 65_536) -> str | None:
        value = self.get(key)
        if value is None:
            return default
        if not isinstance(value, str):
            raise self.fail(key, f"must be a string, got {json.dumps(value)[:40]}")
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
        extra = sorted(set(self.obj) - self.seen)
        if extra:
            where = f" in {self.path}" if self.path else ""
            raise InvalidInput(f"unknown field {extra[0]!r}{where}; remove it (see the API "
                               f"reference in spec/http-api.md)", kind=self.kind)
