"""Helpers for testing the appliance and backend plugins."""
