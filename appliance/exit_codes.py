"""The appliance's exit codes (README § Running it)."""

EXIT_OK, EXIT_ERROR, EXIT_USAGE, EXIT_FORCED = 0, 1, 2, 3
