"""The service layer: request validation and the facade over a backend."""

from .executions import Service, execution_info
from .work import WorkSignal

__all__ = ["Service", "WorkSignal", "execution_info"]
