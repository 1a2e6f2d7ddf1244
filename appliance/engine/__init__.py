"""Background reconcilers (scanners) supervised by the appliance."""

from .scanners import Engine, FailureTracker, ScannerSpec

__all__ = ["Engine", "FailureTracker", "ScannerSpec"]
