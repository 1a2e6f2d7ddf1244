"""A setting's declaration: the ``FF_*`` name, its default, what it does and its flag."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Setting:
    """One ``FF_*`` setting, as the appliance or a backend plugin declares it.

    ``default`` is shown in ``--help`` and the README (``None``: unset); ``flag`` is the
    ``flowfabric serve`` option that sets it, if any.
    """

    env: str
    default: str | None
    help: str
    flag: str | None = None
