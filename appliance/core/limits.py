"""The ranges numbers must stay in (see spec/http-api.md § Numbers)."""

U32_MAX = 2**32 - 1
MS_MAX = 2**53  # JSON-safe integer milliseconds
#: The latest instant a time field may name (9999-12-31T23:59:59.999Z), and the longest
#: duration: sums of the two stay exact in a double (Lua, JavaScript) with room to spare.
TIME_MAX_MS = 253_402_300_799_999
DURATION_MAX_MS = 3_155_760_000_000  # 100 years
INT32_MIN, INT32_MAX = -(2**31), 2**31 - 1
#: Most items in one batch request, and most tasks one claim may lease.
BATCH_MAX = 1000
