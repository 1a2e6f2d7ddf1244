"""The service layer: the facade over a backend (operations, wake-ups, claims, reads)."""

from .facade import Service
from .work import WorkSignal

__all__ = ["Service", "WorkSignal"]
