"""The Valkey function library (``*.lua``), shipped as package data."""

from importlib import resources


def library_files() -> list[tuple[str, str]]:
    """``(name, text)`` of every library file, in name order (the Valkey backend adds its
    generated prelude when it assembles them)."""
    folder = resources.files(__name__)
    return sorted((e.name, e.read_text(encoding="utf-8")) for e in folder.iterdir()
                  if e.name.endswith(".lua"))
