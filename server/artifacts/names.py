"""Artifact name rules.

Names become file names and Redis key suffixes, and are chosen by agent code,
so anything that could escape a directory, collide with internal keys
(py-code-mode's `__index__`, S10) or be confused by a shell is refused.
"""

from __future__ import annotations

import re

from server.storage.errors import ArtifactInvalidError

# File storage keeps an artifact as `<quoted name>.artifact` in one directory, where '/'
# is quoted as '%2F' and a file name has at most 255 bytes (NAME_MAX): so a name may be
# 246 characters long with each '/' counting as 3. Checked here, for every backend, so a
# name never fails in the filesystem (ENAMETOOLONG, whose message names the server's
# data dir) and works alike on Redis.
MAX_NAME_LENGTH = 255 - len(".artifact")
_SEGMENT_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-]*")  # fullmatch: `$` allows a trailing newline


def encoded_length(name: str) -> int:
    """The name's length as the limit counts it: each '/' as 3 (its quoted form)."""
    return len(name) + 2 * name.count("/")


def validate_artifact_name(name: str) -> str:
    """Accepts 'report.csv', 'runs/2024-01/out.json'; refuses '../x', '/etc', '__index__'."""
    if not isinstance(name, str) or not name:
        raise ArtifactInvalidError("artifact name is empty", field="name")
    length = encoded_length(name)
    if length > MAX_NAME_LENGTH:
        raise ArtifactInvalidError(
            f"artifact name is {length} characters long (each '/' counts as 3); the limit is {MAX_NAME_LENGTH}",
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
