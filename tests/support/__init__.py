"""Helpers shared by the subprocess-driven tests and the benchmark."""
