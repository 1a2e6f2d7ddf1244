"""HTTP surface on quart-trio: routes, guards and the one error mapping."""

from .app import create_app

__all__ = ["create_app"]
