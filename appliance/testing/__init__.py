"""Helpers for testing the appliance and backend plugins."""

from .harness import Harness, Reply, eid_path, open_harness

__all__ = ["Harness", "Reply", "eid_path", "open_harness"]
