"""The backend plugin API: one import for plugin authors."""

from appliance.core.settings import Setting

from .hookspecs import hookimpl, hookspec
from .protocol import OPERATIONS, SCANNERS, Backend, BackendBase, BackendEnv, Outcome, ScanResult

__all__ = ["Backend", "BackendBase", "BackendEnv", "OPERATIONS", "Outcome", "SCANNERS",
           "ScanResult", "Setting", "hookimpl", "hookspec"]
