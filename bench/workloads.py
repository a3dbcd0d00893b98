"""The code every system under test runs, defined once so comparisons are like for like."""

ONE_PLUS_ONE = "1+1"
#: (d): a flushed print followed by a sleep, so first-output latency is not hidden by completion.
STDOUT_CODE = "print('a', flush=True); time.sleep(0.5)"
