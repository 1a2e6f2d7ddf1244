"""Background reconcilers (scanners) supervised by the appliance."""

from .scanners import Engine, FailureTracker, ScannerSpec, ScanResult

__all__ = ["Engine", "FailureTracker", "ScanResult", "ScannerSpec"]
