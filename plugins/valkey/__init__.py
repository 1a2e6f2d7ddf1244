"""Valkey/Redis backend (FF_BACKEND=valkey): under construction."""
