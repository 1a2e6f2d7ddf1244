"""Shared implementation for SQL stores: statements, operations, a base backend."""
