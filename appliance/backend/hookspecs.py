"""The plugin API: hooks a backend distribution implements.

Plugins register under the ``flowfabric`` entry-point group (the in-tree
backends do the same) and mark implementations with ``hookimpl``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:
    from appliance.core.settings import Setting

    from .protocol import BackendBase

hookspec = pluggy.HookspecMarker("flowfabric")
hookimpl = pluggy.HookimplMarker("flowfabric")


@hookspec
def flowfabric_backend_names() -> list[str]:
    """Names of the backends this plugin provides (e.g. ``["sqlite"]``).

    Returns:
        The names users pass as ``FF_BACKEND`` / ``--backend``.
    """


@hookspec(firstresult=True)
def flowfabric_backend(name: str, config: Any) -> BackendBase | None:
    """Build the backend called ``name``, or return ``None`` if it is not yours.

    Stops at first non-None result. Keep it synchronous and cheap: connect
    in ``Backend.prepare``.

    Args:
        name: the requested backend name.
        config: the appliance ``Config``; read your own settings with
            ``config.option("FF_MYSTORE_URL")`` (env var, then ``--set`` flags).

    Returns:
        A ``BackendBase`` subclass instance, or ``None``.
    """


@hookspec
def flowfabric_settings() -> list[Setting]:
    """The ``FF_*`` settings this plugin reads.

    They are listed by ``flowfabric serve --help`` and count as known names: an
    ``FF_*`` variable or ``--set`` name that neither the appliance nor any plugin
    declares stops the appliance with a did-you-mean message (``FF_TEST_*``
    environment variables belong to test suites and are not checked). Each name,
    and each flag, has one owner: one the appliance or another plugin already
    declares makes this plugin BROKEN. Called at discovery (also for ``--help``):
    keep it cheap; validate values in ``flowfabric_backend``.

    Returns:
        ``appliance.backend.Setting`` values (name, default, help, and optionally a
        ``flowfabric serve`` flag such as ``"--sqlite-path"``).
    """
