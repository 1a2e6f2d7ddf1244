"""Versioned SQL schemas (``<dialect>/NNNN_name.sql``), shipped as package data."""

from importlib import resources


def migrations(dialect: str) -> list[tuple[int, str, str]]:
    """``(version, name, sql)`` for every migration of ``dialect``, in order."""
    folder = resources.files(__name__) / dialect
    out = []
    for entry in folder.iterdir():
        if entry.name.endswith(".sql"):
            version, _, name = entry.name[:-4].partition("_")
            out.append((int(version), name, entry.read_text(encoding="utf-8")))
    return sorted(out)
