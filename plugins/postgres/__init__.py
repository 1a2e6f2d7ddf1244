"""PostgreSQL backend (FF_BACKEND=postgres): under construction."""
