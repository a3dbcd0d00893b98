"""The principals file: which credential belongs to which caller.

One document, JSON (or YAML when the file name ends in `.yaml`/`.yml`), so it can be
written by `codemode tokens create`, by hand, or mounted as a Kubernetes Secret:

    {"version": 1,
     "principals": [
       {"id": "alice-ci", "tenant": "alice", "role": "tenant",
        "tokens": [{"sha256": "<64 hex digits>", "created": "2025-01-01T00:00:00Z"}],
        "mtls_identities": ["spiffe://example.org/ns/alice/sa/ci"]}]}

Tokens are stored only as SHA-256 digests. They are 256-bit random strings, so a fast
unsalted hash is enough: nobody can guess a preimage, and a slow KDF (bcrypt, Argon2)
only helps against guessing low-entropy passwords while costing every call milliseconds.
Anything unexpected (an unknown key, a role typo, a credential on two principals) makes
the whole file invalid: a principals file that half-loads could grant what nobody meant.
"""

from __future__ import annotations

import contextlib
import datetime
import enum
import fcntl
import hashlib
import hmac
import json
import os
import re
import secrets
import tempfile
from collections.abc import Iterable, Iterator
from typing import Any, NamedTuple

FORMAT_VERSION = 1
TOKEN_PREFIX = "cm_"
_ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.@:-]{0,127}")
_TENANT_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,62}")  # as server/storage/records.py
_DIGEST_RE = re.compile(r"[0-9a-f]{64}")
_MAX_IDENTITY_CHARS = 1024
_PRINCIPAL_KEYS = frozenset({"id", "tenant", "role", "tokens", "mtls_identities", "description"})
_TOKEN_KEYS = frozenset({"sha256", "created"})


class PrincipalsError(ValueError):
    """The principals file is missing, unreadable or invalid (the message names where)."""


class Role(enum.StrEnum):
    """What a principal may do; see server/identity/policy.py for the method table."""

    TENANT = "tenant"  # its own tenant's sessions, skills, artifacts and deps
    READER = "reader"  # read and search its tenant's skills and artifacts, nothing else
    OPERATOR = "operator"  # any tenant, named in the request (empty = the server's --tenant)


class TokenEntry(NamedTuple):
    sha256: str  # hex digest of the UTF-8 token
    created: str = ""


class Principal(NamedTuple):
    """One caller. Operators have no tenant of their own: they name one per request.

    A NamedTuple rather than a dataclass: immutable like a frozen one, and about four
    times cheaper to build, which matters when a reload builds 10,000 of them.
    """

    id: str
    role: Role
    tenant: str = ""
    tokens: tuple[TokenEntry, ...] = ()
    mtls_identities: tuple[str, ...] = ()
    description: str = ""

    @property
    def is_operator(self) -> bool:
        return self.role is Role.OPERATOR

    def to_document(self) -> dict[str, Any]:
        doc: dict[str, Any] = {"id": self.id, "role": str(self.role)}
        if self.tenant:
            doc["tenant"] = self.tenant
        if self.description:
            doc["description"] = self.description
        doc["tokens"] = [
            {"sha256": t.sha256, **({"created": t.created} if t.created else {})} for t in self.tokens
        ]
        if self.mtls_identities:
            doc["mtls_identities"] = list(self.mtls_identities)
        return doc


def token_digest(token: str) -> bytes:
    """The lookup key of a token (raw SHA-256 of its UTF-8 bytes)."""
    return hashlib.sha256(token.encode("utf-8")).digest()


def new_token() -> str:
    """256 random bits; the prefix lets secret scanners recognise a leaked token."""
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def now_rfc3339() -> str:
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


class PrincipalSet:
    """A snapshot of the file, indexed by token digest and certificate identity.

    Never changed while in use: a reload builds a new set and swaps it in whole, so a call
    sees either the old set or the new one; the old one is then dismantled.
    """

    def __init__(self, principals: Iterable[Principal] = (), source: str = "") -> None:
        self.principals: tuple[Principal, ...] = tuple(principals)
        self.source = source
        by_id: dict[str, Principal] = {}
        by_digest: dict[bytes, tuple[Principal, bytes]] = {}
        by_identity: dict[str, Principal] = {}
        fromhex = bytes.fromhex  # one loop, locals only: this runs for every principal on every reload
        for principal in self.principals:
            if principal.id in by_id:
                raise self._clash(f"principal id {principal.id!r} appears twice")
            by_id[principal.id] = principal
            for token in principal.tokens:
                digest = fromhex(token.sha256)
                if digest in by_digest:
                    raise self._clash(f"one token hash is listed for both {by_digest[digest][0].id!r} and {principal.id!r}")
                by_digest[digest] = (principal, digest)
            for identity in principal.mtls_identities:
                if identity in by_identity:
                    raise self._clash(f"mTLS identity {identity!r} is listed for both {by_identity[identity].id!r} and {principal.id!r}")
                by_identity[identity] = principal
        self._by_id, self._by_digest, self._by_identity = by_id, by_digest, by_identity

    def dismantle(self) -> None:
        """Frees a set nobody uses any more in many small steps (a worker thread calls this),
        instead of one deallocation of 10,000 principals on the event loop."""
        for index in (self._by_id, self._by_digest, self._by_identity):
            index.clear()
        principals, self.principals = list(self.principals), ()
        _free_in_steps(principals)

    def _clash(self, message: str) -> PrincipalsError:
        return PrincipalsError(f"{self.source}: {message}" if self.source else message)

    def __len__(self) -> int:
        return len(self.principals)

    def get(self, principal_id: str) -> Principal | None:
        return self._by_id.get(principal_id)

    def by_token(self, token: str) -> Principal | None:
        """The principal holding `token`, found by its digest and confirmed with a
        constant-time comparison of the digests (never of the tokens themselves)."""
        digest = token_digest(token)
        found = self._by_digest.get(digest)
        if found is None:
            return None
        principal, stored = found
        return principal if hmac.compare_digest(stored, digest) else None

    def by_identity(self, identity: str) -> Principal | None:
        return self._by_identity.get(identity)

    def with_principal(self, principal: Principal) -> "PrincipalSet":
        """A new set with `principal` added at the end, or replacing the one with its id in place."""
        if principal.id not in self._by_id:
            return PrincipalSet([*self.principals, principal], self.source)
        return PrincipalSet([principal if p.id == principal.id else p for p in self.principals], self.source)

    def without(self, principal_id: str) -> "PrincipalSet":
        return PrincipalSet([p for p in self.principals if p.id != principal_id], self.source)

    def to_document(self) -> dict[str, Any]:
        return {"version": FORMAT_VERSION, "principals": [p.to_document() for p in self.principals]}


# ---- parsing ------------------------------------------------------------------------
#
# Written for speed as much as for strictness: a 10,000-principal file must reload in well
# under 200 ms and never hold the GIL (and with it the server's event loop) for long. So
# JSON is decoded one principal at a time (many short C calls, not one long one), and the
# per-entry checks avoid building strings unless something is wrong.

_ROLES = {str(role): role for role in Role}
_WS = re.compile(r"[ \t\n\r]*")
_DECODER = json.JSONDecoder()


class _Pieces(list):
    """The "principals" array decoded element by element, with each element's JSON text.
    An element whose text the previous load already validated is that Principal, not a dict."""

    texts: list[str]


class _Known:
    """The previous load: each principal's JSON text and the Principal it became, in file order."""

    def __init__(self, texts: list[str] | None = None, principals: list["Principal"] | None = None) -> None:
        self.texts = texts or []
        self.principals = principals or []
        self.position = {text: k for k, text in enumerate(self.texts)}


_NOTHING_KNOWN = _Known()


def _is_yaml(path: str) -> bool:
    return path.lower().endswith((".yaml", ".yml"))


def decode(text: str, path: str, known: _Known = _NOTHING_KNOWN) -> object:
    """JSON, or YAML for .yaml/.yml names."""
    if _is_yaml(path):
        import yaml

        loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
        try:
            return yaml.load(text, Loader=loader)  # noqa: S506 - a safe loader
        except yaml.YAMLError as exc:
            raise PrincipalsError(f"{path}: not valid YAML: {exc}") from None
    try:
        return _json_in_pieces(text, known)
    except (ValueError, IndexError) as exc:
        raise PrincipalsError(f"{path}: not valid JSON: {exc}") from None


_SPACE = " \t\n\r"


def _skip(text: str, i: int) -> int:
    return _WS.match(text, i).end() if text[i] in _SPACE else i  # type: ignore[union-attr]


def _value(text: str, i: int) -> tuple[object, int]:
    try:
        return _DECODER.scan_once(text, i)  # type: ignore[attr-defined]
    except StopIteration as stop:
        raise ValueError(f"expecting a value at char {stop.value}") from None


def _json_in_pieces(text: str, known: _Known = _NOTHING_KNOWN) -> object:
    """json.loads, except that the elements of a top-level "principals" array are decoded
    one by one (each a short call the interpreter can switch threads after) and keep
    their JSON text, so an unchanged principal is recognised on the next reload."""
    i = _skip(text, 0) if text else 0
    if not text.startswith("{", i):
        return json.loads(text)  # not an object: parse() says what is wrong with it
    document: dict[str, object] = {}
    i = _skip(text, i + 1)
    if text.startswith("}", i):
        i += 1
    else:
        while True:
            key, i = _value(text, i)
            if not isinstance(key, str):
                raise ValueError(f"expected a string key at char {i}")
            i = _skip(text, i)
            if not text.startswith(":", i):
                raise ValueError(f"expected ':' at char {i}")
            i = _skip(text, i + 1)
            value: object
            if key == "principals" and text.startswith("[", i):
                value, i = _array_in_pieces(text, i, known)
            else:
                value, i = _value(text, i)
            document[key] = value
            i = _skip(text, i)
            if text[i] == ",":
                i = _skip(text, i + 1)
            elif text[i] == "}":
                i += 1
                break
            else:
                raise ValueError(f"expected ',' or '}}' at char {i}")
    if i < len(text) and _skip(text, i) != len(text):
        raise ValueError(f"extra data at char {i}")
    return document


def _array_in_pieces(text: str, i: int, known: _Known) -> tuple[_Pieces, int]:
    """The array at `i`. An element that begins with the exact text of a principal of the
    previous load (the one after the last match, else any) is that principal, found with
    one string comparison instead of a decode: a JSON object's text cannot be the prefix
    of a different value, so an equal prefix is the same object."""
    items = _Pieces()
    texts: list[str] = []
    items.texts = texts
    i = _skip(text, i + 1)
    if text[i] == "]":
        return items, i + 1
    scan, startswith = _DECODER.scan_once, text.startswith  # type: ignore[attr-defined]
    known_texts, known_principals, position = known.texts, known.principals, known.position
    guess, count = 0, len(known_texts)
    while True:
        if guess < count and startswith(known_texts[guess], i):
            item, piece = known_principals[guess], known_texts[guess]
            end, guess = i + len(piece), guess + 1
        else:
            try:
                item, end = scan(text, i)
            except StopIteration as stop:
                raise ValueError(f"expecting a value at char {stop.value}") from None
            piece = text[i:end]
            k = position.get(piece)
            if k is not None:
                item, guess = known_principals[k], k + 1
        items.append(item)
        texts.append(piece)
        i = _skip(text, end)
        if text[i] == ",":
            i = _skip(text, i + 1)
        elif text[i] == "]":
            return items, i + 1
        else:
            raise ValueError(f"expected ',' or ']' at char {i}")


def _fail(source: str, index: int, entry: object, message: str) -> PrincipalsError:
    name = entry.get("id") if isinstance(entry, dict) else None
    label = f" ({name})" if isinstance(name, str) else ""
    return PrincipalsError(f"{source}: principals[{index}]{label}: {message}")


def _principal(entry: object, index: int, source: str) -> Principal:
    if type(entry) is not dict:
        raise _fail(source, index, entry, "each principal must be an object")
    if not entry.keys() <= _PRINCIPAL_KEYS:
        unknown = sorted(map(str, entry.keys() - _PRINCIPAL_KEYS))
        raise _fail(source, index, entry, f"unknown keys {unknown} (allowed: {sorted(_PRINCIPAL_KEYS)})")
    principal_id = entry.get("id")
    if type(principal_id) is not str or not _ID_RE.fullmatch(principal_id):
        raise _fail(source, index, entry, f"id {principal_id!r} must be 1-128 letters, digits or _.@:- (starting alphanumeric)")
    role_name = entry.get("role")
    role = _ROLES.get(role_name) if type(role_name) is str else None
    if role is None:
        raise _fail(source, index, entry, f"role must be one of {list(_ROLES)}")
    tenant = entry.get("tenant", "")
    if type(tenant) is not str:
        raise _fail(source, index, entry, "tenant must be a string")
    if role is Role.OPERATOR:
        if tenant:
            raise _fail(source, index, entry, "an operator has no tenant (it names one per request); remove 'tenant'")
    elif not _TENANT_RE.fullmatch(tenant) or ".." in tenant:
        raise _fail(source, index, entry, f"tenant {tenant!r} must be 1-63 letters, digits or _.- (starting alphanumeric)")
    tokens_raw = entry.get("tokens", ())
    if type(tokens_raw) is not list and tokens_raw != ():
        raise _fail(source, index, entry, "tokens must be a list")
    tokens = []
    for token in tokens_raw:
        if type(token) is not dict or not token.keys() <= _TOKEN_KEYS:
            raise _fail(source, index, entry, "each token must be an object with 'sha256' (and optional 'created')")
        digest, created = token.get("sha256"), token.get("created", "")
        if type(digest) is not str or not _DIGEST_RE.fullmatch(digest):
            raise _fail(source, index, entry, "tokens[].sha256 must be 64 lowercase hex digits")
        if type(created) is not str:
            raise _fail(source, index, entry, "tokens[].created must be a string")
        tokens.append(TokenEntry(digest, created))
    identities = entry.get("mtls_identities", ())
    if type(identities) is not list and identities != ():
        raise _fail(source, index, entry, "mtls_identities must be a list")
    for identity in identities:
        if type(identity) is not str or not 0 < len(identity) <= _MAX_IDENTITY_CHARS or not identity.isprintable():
            raise _fail(source, index, entry, f"mtls_identities[] must be printable strings of 1-{_MAX_IDENTITY_CHARS} characters")
    description = entry.get("description", "")
    if type(description) is not str:
        raise _fail(source, index, entry, "description must be a string")
    return Principal(principal_id, role, tenant, tuple(tokens), tuple(identities), description)


def _entries(document: object, source: str) -> list:
    if not isinstance(document, dict):
        raise PrincipalsError(f"{source}: the document must be an object with a 'principals' list")
    unknown = set(document) - {"version", "principals"}
    if unknown:
        raise PrincipalsError(f"{source}: unknown top-level keys {sorted(map(str, unknown))}")
    version = document.get("version", FORMAT_VERSION)
    if version != FORMAT_VERSION:
        raise PrincipalsError(f"{source}: version {version!r} is not supported (expected {FORMAT_VERSION})")
    entries = document.get("principals", [])
    if not isinstance(entries, list):
        raise PrincipalsError(f"{source}: 'principals' must be a list")
    return entries


def parse(document: object, source: str) -> PrincipalSet:
    """Validates a decoded document (JSON or YAML) into a PrincipalSet."""
    return PrincipalSet([_principal(e, i, source) for i, e in enumerate(_entries(document, source))], source)


def _free_in_steps(items: list) -> None:
    """Empties a big list a slice at a time: one `del` of it would free everything in a
    single uninterruptible step, holding the GIL (and the event loop) for milliseconds."""
    while items:
        del items[-512:]


def _read(path: str) -> str:
    try:
        with open(path, encoding="utf-8") as handle:
            return handle.read()
    except OSError as exc:
        raise PrincipalsError(f"{path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise PrincipalsError(f"{path}: not UTF-8 text") from None


class PrincipalsFile:
    """The file at `path`, loaded again on every change.

    A principal whose JSON text is exactly what it was at the last load is reused, neither
    decoded nor validated again: a Secret that gains one principal among 10,000 costs one
    string comparison per unchanged principal, the new one's validation, and the index.
    Blocking; the watcher runs it in a thread.
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self._known = _NOTHING_KNOWN

    def load(self) -> PrincipalSet:
        entries = _entries(decode(_read(self.path), self.path, self._known), self.path)
        texts = getattr(entries, "texts", None)
        principals = [
            entry if type(entry) is Principal else _principal(entry, i, self.path) for i, entry in enumerate(entries)
        ]
        result = PrincipalSet(principals, self.path)  # raises on duplicates: keep what is known then
        self._known = _Known(texts, principals) if texts is not None else _NOTHING_KNOWN  # YAML: no texts
        _free_in_steps(entries)  # decoded dicts (about ten objects per new principal), in short steps
        return result


def load(path: str) -> PrincipalSet:
    """Reads and validates the file once (the CLI; the server uses PrincipalsFile)."""
    return PrincipalsFile(path).load()


# ---- writing (codemode tokens, first start) ------------------------------------------


def encode(principals: PrincipalSet, path: str) -> str:
    document = principals.to_document()
    if _is_yaml(path):
        import yaml

        return yaml.safe_dump(document, sort_keys=False)
    return json.dumps(document, indent=2) + "\n"


def write_private(path: str, text: str) -> None:
    """Atomically replaces `path` with `text`, mode 0600: a reader (the server's watcher)
    sees the old file or the new one, never half of it."""
    directory = os.path.dirname(os.path.abspath(path))
    fd, temp = tempfile.mkstemp(dir=directory, prefix=".tmp-", suffix=os.path.basename(path))
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            os.fchmod(handle.fileno(), 0o600)
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temp)
        raise
    with contextlib.suppress(OSError):
        dir_fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


def save(principals: PrincipalSet, path: str) -> None:
    """Writes the file, after checking it parses back: never write what the server refuses."""
    parse(principals.to_document(), path)
    write_private(path, encode(principals, path))


@contextlib.contextmanager
def locked(path: str) -> Iterator[None]:
    """Serialises read-modify-write of the file between `codemode tokens` runs."""
    fd = os.open(f"{path}.lock", os.O_CREAT | os.O_RDWR, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)
