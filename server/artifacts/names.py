"""Artifact name rules.

Names become file names and Redis key suffixes, and are chosen by agent code,
so anything that could escape a directory, collide with internal keys
(py-code-mode's `__index__`, S10) or be confused by a shell is refused.
"""

from __future__ import annotations

import re

from server.storage.errors import ArtifactInvalidError

MAX_NAME_LENGTH = 255
_SEGMENT_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-]*")  # fullmatch: `$` allows a trailing newline


def validate_artifact_name(name: str) -> str:
    """Accepts 'report.csv', 'runs/2024-01/out.json'; refuses '../x', '/etc', '__index__'."""
    if not isinstance(name, str) or not name:
        raise ArtifactInvalidError("artifact name is empty", field="name")
    if len(name) > MAX_NAME_LENGTH:
        raise ArtifactInvalidError(
            f"artifact name is {len(name)} characters long; the limit is {MAX_NAME_LENGTH}",
            field="name",
        )
    if name.startswith("/"):
        raise ArtifactInvalidError(f"artifact name {name!r} must not start with '/'", field="name")
    for segment in name.split("/"):
        if segment in ("", ".", ".."):
            raise ArtifactInvalidError(
                f"artifact name {name!r} has an empty, '.' or '..' path segment", field="name"
            )
        if not _SEGMENT_RE.fullmatch(segment):
            raise ArtifactInvalidError(
                f"artifact name {name!r} is invalid: each '/'-separated part must start with a "
                "letter or digit and contain only letters, digits, '_', '.', '-'",
                field="name",
            )
    return name
