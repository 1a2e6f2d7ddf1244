"""FlowFabric appliance: a durable execution engine behind one HTTP API."""

__version__ = "0.1.0"
