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


def pending(dialect: str, applied: set[int], where: str) -> list[tuple[int, str, str]]:
    """The migrations ``where`` still needs, oldest first; refuses a newer store."""
    from appliance.core.errors import StartupError

    known = migrations(dialect)
    newest = known[-1][0]
    if applied and max(applied) > newest:
        raise StartupError(f"{where} was written by a newer FlowFabric (schema "
                           f"{max(applied)} > {newest}); upgrade this appliance")
    return [m for m in known if m[0] not in applied]
