"""A run's defaults, in a module that imports nothing heavy (the command line's help shows them)."""

SCHEDULES = ("round-robin", "balanced")
DEFAULT_TRANSPORT = "auto"
DEFAULT_SCHEDULE = "balanced"
DEFAULT_STALL_TIMEOUT_S = 120.0
