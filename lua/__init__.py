"""The Valkey function library (``*.lua``), shipped as package data."""

from importlib import resources


def library_source() -> str:
    """The library files concatenated in name order, ready for FUNCTION LOAD."""
    folder = resources.files(__name__)
    parts = sorted((e.name, e.read_text(encoding="utf-8")) for e in folder.iterdir()
                   if e.name.endswith(".lua"))
    return "\n".join(text for _, text in parts)
