"""The backend plugin API: one import for plugin authors."""

from appliance.core.operations import OPERATIONS, Applied, Mutation
from appliance.core.settings import Setting

from .hookspecs import hookimpl, hookspec
from .protocol import BASIC, Backend, BackendBase, BackendEnv, Claim

__all__ = ["BASIC", "OPERATIONS", "Applied", "Backend", "BackendBase", "BackendEnv", "Claim",
           "Mutation", "Setting", "hookimpl", "hookspec"]
