"""Timestamps in sandboxed code: what the API's google.protobuf.Timestamp becomes in Python.

Host calls carry them as RFC 3339 strings in UTC ("2024-05-01T12:00:00.123456Z", the
Timestamp's JSON form); `skills.*` and `artifacts.*` hand them to user code as
timezone-aware `datetime.datetime` objects in UTC, the natural Python type (it
compares, sorts and formats, and `.timestamp()` gives the epoch seconds back).
Imports no gRPC.
"""

from __future__ import annotations

import datetime
from typing import Any

TIME_FIELDS = ("create_time", "update_time")


def parse(value: Any) -> Any:
    """An RFC 3339 string (or epoch seconds, from an older control plane) as a UTC datetime."""
    if isinstance(value, str):
        parsed = datetime.datetime.fromisoformat(value.replace("Z", "+00:00"))
        return parsed if parsed.tzinfo else parsed.replace(tzinfo=datetime.timezone.utc)
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return datetime.datetime.fromtimestamp(value, datetime.timezone.utc)
    return value


def with_datetimes(value: Any) -> Any:
    """A resource dict (or a list of them, or None) with its time fields as datetimes."""
    if isinstance(value, list):
        return [with_datetimes(item) for item in value]
    if isinstance(value, dict):
        return {key: parse(item) if key in TIME_FIELDS else item for key, item in value.items()}
    return value
