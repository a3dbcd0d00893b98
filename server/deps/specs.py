"""Requirement specifiers as py-code-mode accepts them (deps/store.py), normalized.

Only a name, optional extras and optional version constraints pass, so URLs,
VCS references, local paths, environment markers, pip options and shell
syntax never reach pip.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable

from server.deps.errors import DepsSpecError

MAX_SPEC_CHARS = 256
_SPEC_RE = re.compile(
    r"(?P<name>[A-Za-z0-9][A-Za-z0-9._-]*)(?P<extras>\[[A-Za-z0-9._,-]+\])?(?P<version>[<>=!~][A-Za-z0-9.*,<>=!~ ]+)?"
)  # fullmatch: `$` would allow a trailing newline
_BLOCKED_CHARACTERS = set(";|&`$()@'\"\\/:#")


def normalize_spec(spec: object) -> str:
    """Validates one spec and returns it with its name normalized (PEP 503)."""
    if not isinstance(spec, str) or not spec.strip():
        raise DepsSpecError("a package spec must be a non-empty string")
    spec = spec.strip()
    if len(spec) > MAX_SPEC_CHARS:
        raise DepsSpecError(f"package spec is longer than {MAX_SPEC_CHARS} characters")
    for char in spec:
        if ord(char) < 32 or ord(char) == 127:
            raise DepsSpecError("package spec contains a control character")
        if char in _BLOCKED_CHARACTERS:
            raise DepsSpecError(
                f"package spec {spec!r} contains {char!r}: URLs, VCS references, paths, "
                "environment markers and shell syntax are not allowed"
            )
    match = _SPEC_RE.fullmatch(spec)
    if not match:
        raise DepsSpecError(f"invalid package spec {spec!r}: expected a name with optional [extras] and version")
    name = re.sub(r"[-_.]+", "-", match.group("name")).lower()
    extras = (match.group("extras") or "").lower()
    version = (match.group("version") or "").replace(" ", "")
    return f"{name}{extras}{version}"


def base_name(spec: str) -> str:
    """The normalized project name of a (normalized) spec."""
    return re.split(r"[\[<>=!~]", spec, maxsplit=1)[0]


def normalize_set(specs: Iterable[str]) -> tuple[str, ...]:
    """Normalized, one entry per project (the last one wins, like deps.add), sorted."""
    by_name: dict[str, str] = {}
    for spec in specs:
        normalized = normalize_spec(spec)
        by_name[base_name(normalized)] = normalized
    return tuple(sorted(by_name.values()))


def package_set_key(specs: tuple[str, ...]) -> str:
    """Cache key of a normalized set: same set, same directory, on any host."""
    return hashlib.sha256("\n".join(specs).encode()).hexdigest()[:16]
