"""Per-backend test setup: each module defines a ``<name>_backend_options`` fixture
returning the FF_* options of an isolated, empty store for one test."""
