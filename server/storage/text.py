"""Strings that can always be sent back: no lone surrogates, on the way in or out.

Host calls carry JSON from sandboxed code, and JSON may spell a lone surrogate
(`"\\ud800"`); Python keeps it in a `str`, the stores keep it (escaped) in JSON, and
protobuf then refuses to encode it, so one bad description made ListSkills and
ListArtifacts INTERNAL for the whole tenant. Writes refuse such strings
(`require_valid_text`, INVALID_ARGUMENT); reads replace any left from before with
U+FFFD (`scrub`) so a stored document can never break a listing.
"""

from __future__ import annotations

from typing import Any

from server.storage.errors import InvalidArgumentError


def is_valid_text(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def require_valid_text(value: Any, field: str) -> None:
    """Raises INVALID_ARGUMENT if any string in `value` (keys of dicts included) has a
    lone surrogate; walks lists and dicts as JSON does."""
    if isinstance(value, str):
        if not is_valid_text(value):
            raise InvalidArgumentError(
                f"{field} is not valid Unicode text (it has a lone surrogate, e.g. from '\\ud800' in JSON)",
                field=field,
            )
    elif isinstance(value, dict):
        for key, item in value.items():
            require_valid_text(key, field)
            require_valid_text(item, field)
    elif isinstance(value, (list, tuple)):
        for item in value:
            require_valid_text(item, field)


def scrub(value: Any) -> Any:
    """`value` with every lone surrogate replaced by U+FFFD (valid pairs joined)."""
    if isinstance(value, str):
        if is_valid_text(value):
            return value
        return value.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
    if isinstance(value, dict):
        return {scrub(key): scrub(item) for key, item in value.items()}
    if isinstance(value, list):
        return [scrub(item) for item in value]
    return value


__all__ = ["is_valid_text", "require_valid_text", "scrub"]
