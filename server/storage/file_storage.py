"""FileStorage: the embedded default backend, one directory tree per tenant.

Layout under `root` (documented in docs/storage.md):

    tenants/<tenant>/.lock                     flock'ed by every writer
    tenants/<tenant>/skills/<name>.json        one SkillRecord document
    tenants/<tenant>/skills.rev                counter bumped by every skill write
    tenants/<tenant>/skills.changes            change feed: "<revision> <name>" lines, appended
    tenants/<tenant>/vectors/<model-hash>/<name>.vec  one skill's cached search vector
    tenants/<tenant>/vectors/<model-hash>.json the older single-file vectors (migrated on read)
    tenants/<tenant>/artifacts/<quoted>.artifact  header (8-byte length + JSON) + data
    tenants/<tenant>/artifacts/.upload-*          an artifact being uploaded

Every file is written to a temporary file and `os.replace`d, so readers never
see a torn document and need no lock. An artifact upload streams its data into
its temporary file behind a header slot sized from the draft record (JSON
tolerates the trailing spaces that pad it), writes the real header into the slot
at commit and renames: one pass over the data, none of it in memory. Writers take an exclusive `fcntl.flock`
on the tenant's lock file, so read-check-write sequences (create, etag CAS,
revision bump) stay correct across server processes sharing the directory.
A committed file is never written again, only replaced or unlinked: backups
(server/storage/file_backup.py) hard-link committed files under the locks and
rely on that to freeze the store at one instant. The one exception is
`skills.changes`, the change feed search indexes follow to update incrementally:
a writer appends "<revision> <name>" before it writes the skill and bumps
`skills.rev`, so every committed revision has its line; a reader trusts only
lines up to the revision it read and rebuilds when a line is missing (the feed
was compacted past it, or is absent). It is derived data, so backups leave it
out. Vectors are a cache keyed by content hash: one small file per skill, written
by rename without fsync (a file torn by a power cut fails validation and the
skill is embedded again).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import dataclasses
import fcntl
import hashlib
import json
import logging
import os
import struct
import tempfile
import time
import urllib.parse
from pathlib import Path
from typing import BinaryIO, Callable, Iterator, TypeVar

from server.quotas import artifact_bytes_quota_error, skills_quota_error
from server.storage.base import ArtifactUpload, Storage
from server.storage.errors import (
    ArtifactNotFoundError,
    EtagMismatchError,
    SkillAlreadyExistsError,
    SkillNotFoundError,
    StorageUnavailableError,
    StoreError,
    storage_unavailable,
)
from server.storage.records import ArtifactRecord, SkillRecord, validate_tenant

T = TypeVar("T")
_log = logging.getLogger(__name__)
_HEADER = struct.Struct(">Q")
_UPLOAD_PREFIX = ".upload-"
# Room beyond the draft's widest header, for the final values' digits.
_HEADER_SLACK = 64
# The change feed is compacted to its newer half when it grows past this.
CHANGES_MAX_BYTES = 512 * 1024
_CHANGES = "skills.changes"
# Older upload files belong to a server that died mid-upload; no live upload is this slow.
_STALE_UPLOAD_SECONDS = 24 * 3600.0


def _widest(draft: ArtifactRecord) -> ArtifactRecord:
    """The draft with the longest values size, sha256 and time can take in JSON."""
    return dataclasses.replace(draft, size_bytes=2**63, sha256="f" * 64, create_time=-1.2345678901234567e300)


def _remove_stale_uploads(directory: Path) -> None:
    cutoff = time.time() - _STALE_UPLOAD_SECONDS
    for name in os.listdir(directory):
        if name.startswith(_UPLOAD_PREFIX):
            with contextlib.suppress(OSError):
                if os.stat(directory / name).st_mtime < cutoff:
                    os.unlink(directory / name)


class _FileArtifactUpload(ArtifactUpload):
    def __init__(
        self, storage: "FileStorage", tenant: str, name: str, path: Path, tmp: Path, handle: BinaryIO, room: int
    ) -> None:
        self._storage = storage
        self._tenant = tenant
        self._name = name
        self._path = path
        self._tmp = tmp
        self._handle: BinaryIO | None = handle
        self._room = room

    async def write(self, chunk: bytes) -> None:
        handle = self._handle
        if handle is None:
            raise StorageUnavailableError("the upload was already committed or aborted")
        await self._storage._run(lambda: handle.write(chunk))

    async def commit(self, record: ArtifactRecord, *, max_tenant_bytes: int = 0) -> None:
        header = record.to_json().encode()
        handle = self._handle
        if handle is None or record.name != self._name or len(header) > self._room:
            await self.abort()
            raise StorageUnavailableError("artifact upload cannot be committed: its header does not fit the draft's")

        def op() -> None:
            handle.seek(0)
            handle.write(_HEADER.pack(self._room) + header.ljust(self._room))
            handle.flush()
            os.fsync(handle.fileno())
            with self._storage._locked(self._tenant):
                if max_tenant_bytes:
                    used = self._storage._artifact_usage(self._tenant, except_name=record.name)
                    if used + record.size_bytes > max_tenant_bytes:
                        raise artifact_bytes_quota_error(self._tenant, max_tenant_bytes, used, record.size_bytes)
                os.replace(self._tmp, self._path)
            handle.close()
            self._handle = None

        try:
            await self._storage._run(op)
        except BaseException:
            await self.abort()
            raise

    async def abort(self) -> None:
        handle, self._handle = self._handle, None
        tmp = self._tmp

        def op() -> None:
            if handle is not None:
                with contextlib.suppress(OSError):
                    handle.close()
            with contextlib.suppress(OSError):
                os.unlink(tmp)

        # Shielded: a cancelled upload (client gone) must still remove its file.
        with contextlib.suppress(Exception):
            await asyncio.shield(asyncio.to_thread(op))


class FileStorage(Storage):
    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)

    # Plumbing ---------------------------------------------------------------

    def _tenant_dir(self, tenant: str) -> Path:
        return self.root / "tenants" / validate_tenant(tenant)

    async def _run(self, fn: Callable[[], T]) -> T:
        """Runs blocking file I/O off the event loop; OS errors mean the store is unusable."""
        try:
            return await asyncio.to_thread(fn)
        except StoreError:
            raise
        except OSError as exc:
            raise storage_unavailable("file storage", exc) from exc

    @contextlib.contextmanager
    def _locked(self, tenant: str) -> Iterator[Path]:
        tdir = self._tenant_dir(tenant)
        tdir.mkdir(parents=True, exist_ok=True)
        with open(tdir / ".lock", "a+b") as lock:
            fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
            try:
                yield tdir
            finally:
                fcntl.flock(lock.fileno(), fcntl.LOCK_UN)

    @staticmethod
    def _atomic_write(path: Path, data: bytes, *, sync: bool = True) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                if sync:
                    f.flush()
                    os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise

    @staticmethod
    def _next_revision(tdir: Path, name: str) -> int:
        """Appends the change-feed line of the write about to happen (under the lock, before
        the write itself: a crash then leaves an extra line, never a missing one)."""
        try:
            rev = int((tdir / "skills.rev").read_text() or "0")
        except FileNotFoundError:
            rev = 0
        path = tdir / _CHANGES
        with open(path, "ab+") as log:
            size = log.seek(0, os.SEEK_END)
            if size > CHANGES_MAX_BYTES:
                log.seek(size // 2)
                tail = log.read()
                if not tail.endswith(b"\n"):
                    tail += b"\n"
                FileStorage._atomic_write(path, tail[tail.find(b"\n") + 1 :] + f"{rev + 1} {name}\n".encode(), sync=False)
                return rev + 1
            if size:
                log.seek(size - 1)
                if log.read(1) != b"\n":  # a line torn by a crash: end it, readers skip it
                    log.write(b"\n")
            log.write(f"{rev + 1} {name}\n".encode())
        return rev + 1

    def _commit_revision(self, tdir: Path, rev: int) -> None:
        self._atomic_write(tdir / "skills.rev", str(rev).encode())

    @staticmethod
    def _skill_path(tdir: Path, name: str) -> Path:
        return tdir / "skills" / f"{name}.json"

    @staticmethod
    def _read_skill(path: Path, name: str) -> SkillRecord:
        try:
            return SkillRecord.from_json(path.read_bytes())
        except FileNotFoundError:
            raise SkillNotFoundError(name) from None

    # Skills -----------------------------------------------------------------

    async def create_skill(self, tenant: str, record: SkillRecord, *, max_skills: int = 0) -> None:
        def op() -> None:
            with self._locked(tenant) as tdir:
                path = self._skill_path(tdir, record.name)
                if path.exists():
                    raise SkillAlreadyExistsError(record.name)
                if max_skills and len(self._skill_names(tenant)) >= max_skills:
                    raise skills_quota_error(tenant, max_skills)
                rev = self._next_revision(tdir, record.name)
                self._atomic_write(path, record.to_json().encode())
                self._commit_revision(tdir, rev)

        await self._run(op)

    async def get_skill(self, tenant: str, name: str) -> SkillRecord:
        return await self._run(
            lambda: self._read_skill(self._skill_path(self._tenant_dir(tenant), name), name)
        )

    async def replace_skill(self, tenant: str, record: SkillRecord, expected_etag: str) -> None:
        def op() -> None:
            with self._locked(tenant) as tdir:
                path = self._skill_path(tdir, record.name)
                current = self._read_skill(path, record.name)
                if current.etag != expected_etag:
                    raise EtagMismatchError(record.name)
                rev = self._next_revision(tdir, record.name)
                self._atomic_write(path, record.to_json().encode())
                self._commit_revision(tdir, rev)

        await self._run(op)

    async def delete_skill(self, tenant: str, name: str, expected_etag: str = "") -> None:
        def op() -> None:
            with self._locked(tenant) as tdir:
                path = self._skill_path(tdir, name)
                current = self._read_skill(path, name)
                if expected_etag and current.etag != expected_etag:
                    raise EtagMismatchError(name)
                rev = self._next_revision(tdir, name)
                path.unlink()
                self._commit_revision(tdir, rev)

        await self._run(op)

    def _skill_names(self, tenant: str) -> list[str]:
        try:
            files = os.listdir(self._tenant_dir(tenant) / "skills")
        except FileNotFoundError:
            return []
        return sorted(f[:-5] for f in files if f.endswith(".json") and not f.startswith("."))

    def _read_many(self, tenant: str, names: list[str]) -> list[SkillRecord]:
        tdir = self._tenant_dir(tenant)
        # Plain strings, not a Path per file: pathlib's joins were a third of the time
        # of reading a 100k-skill library.
        directory = os.path.join(tdir, "skills")
        records = []
        for name in names:
            try:
                with open(os.path.join(directory, name + ".json"), "rb") as f:
                    records.append(SkillRecord.from_json(f.read()))
            except FileNotFoundError:
                continue  # deleted between listdir and read
            except (ValueError, KeyError):
                # One damaged file (e.g. edited by hand) must not hide the whole library.
                _log.error("skipping unreadable skill document %s/%s", tdir, name)
        return records

    async def list_skills(self, tenant: str, after: str, limit: int) -> list[SkillRecord]:
        def op() -> list[SkillRecord]:
            names = [n for n in self._skill_names(tenant) if n > after][:limit]
            return self._read_many(tenant, names)

        return await self._run(op)

    async def all_skills(self, tenant: str) -> list[SkillRecord]:
        return await self._run(lambda: self._read_many(tenant, self._skill_names(tenant)))

    def _revision(self, tenant: str) -> str:
        try:
            return (self._tenant_dir(tenant) / "skills.rev").read_text().strip() or "0"
        except FileNotFoundError:
            return "0"

    async def skills_revision(self, tenant: str) -> str:
        return await self._run(lambda: self._revision(tenant))

    async def get_skills(self, tenant: str, names: list[str]) -> list[SkillRecord]:
        return await self._run(lambda: self._read_many(tenant, names))

    def _changes(self, tenant: str, since: str) -> tuple[str, list[str]] | None:
        revision = self._revision(tenant)
        if revision == since:
            return revision, []
        try:
            first, last = int(since) + 1, int(revision)
        except ValueError:
            return None
        if first > last + 1:
            return None  # the store went back (restored, recreated): not the index's store
        try:
            log = open(self._tenant_dir(tenant) / _CHANGES, "rb")
        except FileNotFoundError:
            return None
        with log:
            size = log.seek(0, os.SEEK_END)
            chunk = 16 * 1024
            while True:
                start = max(0, size - chunk)
                log.seek(start)
                lines = log.read(size - start).split(b"\n")
                if start:
                    lines = lines[1:]  # may begin mid-line
                seen: set[int] = set()
                names: list[str] = []
                oldest = None
                for line in lines:
                    rev_text, _, name = line.decode("utf-8", "replace").partition(" ")
                    if not rev_text.isdigit() or not name:
                        continue  # a torn line, or the unterminated line of a write in progress
                    rev = int(rev_text)
                    oldest = rev if oldest is None else min(oldest, rev)
                    if first <= rev <= last:
                        seen.add(rev)
                        names.append(name)
                if len(seen) == last - first + 1:
                    return revision, list(dict.fromkeys(names))
                if start == 0 or (oldest is not None and oldest < first):
                    return None  # compacted past `since`, or lines lost
                chunk *= 4

    async def skill_changes(self, tenant: str, since: str) -> tuple[str, list[str]] | None:
        return await self._run(lambda: self._changes(tenant, since))

    # Search vectors ---------------------------------------------------------

    def _vector_dir(self, tenant: str, model_id: str) -> Path:
        digest = hashlib.sha256(model_id.encode()).hexdigest()[:24]
        return self._tenant_dir(tenant) / "vectors" / digest

    @staticmethod
    def _read_vector(path: str | os.PathLike[str]) -> tuple[str, bytes] | None:
        try:
            with open(path, "rb") as f:
                data = f.read()
        except FileNotFoundError:
            return None
        content_hash, sep, vector = data.partition(b"\n")
        if not sep or not vector or len(vector) % 4 or len(content_hash) > 128:
            return None  # torn (power cut) or damaged: the skill is embedded again
        return content_hash.decode("ascii", "replace"), vector

    @staticmethod
    def _write_vector(directory: Path, name: str, content_hash: str, vector: bytes) -> None:
        FileStorage._atomic_write(directory / f"{name}.vec", content_hash.encode() + b"\n" + vector, sync=False)

    def _migrate_vectors(self, tenant: str, model_id: str) -> None:
        """Moves the older one-file-per-model vectors into per-skill files, once, keeping any
        per-skill file already written (it is newer)."""
        directory = self._vector_dir(tenant, model_id)
        legacy = directory.with_suffix(".json")
        if not legacy.exists():
            return
        with self._locked(tenant):
            try:
                doc = json.loads(legacy.read_bytes())
            except FileNotFoundError:
                return  # migrated meanwhile
            except ValueError:
                doc = {}
            if doc.get("model_id") == model_id:
                directory.mkdir(parents=True, exist_ok=True)
                for name, entry in doc.get("vectors", {}).items():
                    if not (directory / f"{name}.vec").exists():
                        self._write_vector(directory, name, entry[0], base64.b64decode(entry[1]))
                os.sync()  # the new files durable before the old one goes
            legacy.unlink()

    def _read_vectors(self, tenant: str, model_id: str, names: list[str] | None) -> dict[str, tuple[str, bytes]]:
        self._migrate_vectors(tenant, model_id)
        directory = self._vector_dir(tenant, model_id)
        if names is None:
            try:
                names = [f[:-4] for f in os.listdir(directory) if f.endswith(".vec") and not f.startswith(".")]
            except FileNotFoundError:
                return {}
        out = {}
        base = str(directory)
        for name in names:
            entry = self._read_vector(os.path.join(base, name + ".vec"))
            if entry is not None:
                out[name] = entry
        return out

    async def get_vectors(
        self, tenant: str, model_id: str, names: list[str] | None = None
    ) -> dict[str, tuple[str, bytes]]:
        return await self._run(lambda: self._read_vectors(tenant, model_id, names))

    async def put_vectors(
        self,
        tenant: str,
        model_id: str,
        vectors: dict[str, tuple[str, bytes]],
        *,
        replace_all: bool = False,
    ) -> None:
        def op() -> None:
            self._migrate_vectors(tenant, model_id)
            directory = self._vector_dir(tenant, model_id)
            # Under the tenant lock, so a backup links either the old file or the new one.
            with self._locked(tenant):
                for name, (content_hash, vector) in vectors.items():
                    self._write_vector(directory, name, content_hash, vector)
                if replace_all:
                    with contextlib.suppress(FileNotFoundError):
                        for f in os.listdir(directory):
                            if f.endswith(".vec") and not f.startswith(".") and f[:-4] not in vectors:
                                with contextlib.suppress(FileNotFoundError):
                                    os.unlink(directory / f)

        await self._run(op)

    async def delete_vectors(self, tenant: str, model_id: str, names: list[str]) -> None:
        def op() -> None:
            self._migrate_vectors(tenant, model_id)
            directory = self._vector_dir(tenant, model_id)
            with self._locked(tenant):
                for name in names:
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(directory / f"{name}.vec")

        await self._run(op)

    # Artifacts --------------------------------------------------------------

    def _artifact_path(self, tenant: str, name: str) -> Path:
        # Quoting maps every name (including '/') to one flat, traversal-free file name.
        quoted = urllib.parse.quote(name, safe="")
        return self._tenant_dir(tenant) / "artifacts" / f"{quoted}.artifact"

    @staticmethod
    def _read_header(f: BinaryIO, name: str) -> ArtifactRecord:
        (length,) = _HEADER.unpack(f.read(_HEADER.size))
        return ArtifactRecord.from_json(f.read(length))

    def _open_artifact(self, tenant: str, name: str) -> BinaryIO:
        try:
            return open(self._artifact_path(tenant, name), "rb")
        except FileNotFoundError:
            raise ArtifactNotFoundError(name) from None

    async def begin_artifact(self, tenant: str, draft: ArtifactRecord) -> ArtifactUpload:
        path = self._artifact_path(tenant, draft.name)

        def op() -> _FileArtifactUpload:
            path.parent.mkdir(parents=True, exist_ok=True)
            _remove_stale_uploads(path.parent)
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=_UPLOAD_PREFIX)
            handle = os.fdopen(fd, "wb")
            room = len(_widest(draft).to_json().encode()) + _HEADER_SLACK
            handle.write(_HEADER.pack(room) + b" " * room)
            return _FileArtifactUpload(self, tenant, draft.name, path, Path(tmp), handle, room)

        return await self._run(op)

    def _artifact_usage(self, tenant: str, except_name: str | None = None) -> int:
        """Data bytes of every artifact (file size less its header), read from headers' lengths."""
        directory = self._tenant_dir(tenant) / "artifacts"
        try:
            files = os.listdir(directory)
        except FileNotFoundError:
            return 0
        skip = f"{urllib.parse.quote(except_name, safe='')}.artifact" if except_name else None
        total = 0
        for name in files:
            if not name.endswith(".artifact") or name.startswith(".") or name == skip:
                continue
            try:
                with open(directory / name, "rb") as f:
                    (length,) = _HEADER.unpack(f.read(_HEADER.size))
                    total += max(0, os.fstat(f.fileno()).st_size - _HEADER.size - length)
            except (FileNotFoundError, struct.error):
                continue  # deleted meanwhile, or a damaged file that holds no data
        return total

    async def artifact_bytes(self, tenant: str) -> int:
        return await self._run(lambda: self._artifact_usage(tenant))

    async def get_artifact(self, tenant: str, name: str) -> ArtifactRecord:
        def op() -> ArtifactRecord:
            with self._open_artifact(tenant, name) as f:
                return self._read_header(f, name)

        return await self._run(op)

    async def read_artifact(self, tenant: str, name: str) -> tuple[ArtifactRecord, bytes]:
        def op() -> tuple[ArtifactRecord, bytes]:
            with self._open_artifact(tenant, name) as f:
                return self._read_header(f, name), f.read()

        return await self._run(op)

    async def list_artifacts(self, tenant: str, after: str, limit: int) -> list[ArtifactRecord]:
        def op() -> list[ArtifactRecord]:
            try:
                files = os.listdir(self._tenant_dir(tenant) / "artifacts")
            except FileNotFoundError:
                return []
            names = sorted(
                urllib.parse.unquote(f[: -len(".artifact")])
                for f in files
                if f.endswith(".artifact") and not f.startswith(".")
            )
            records: list[ArtifactRecord] = []
            for name in (n for n in names if n > after):
                if len(records) >= limit:
                    break
                try:
                    with self._open_artifact(tenant, name) as f:
                        records.append(self._read_header(f, name))
                except ArtifactNotFoundError:
                    continue
            return records

        return await self._run(op)

    async def delete_artifact(self, tenant: str, name: str) -> None:
        def op() -> None:
            with self._locked(tenant):
                try:
                    self._artifact_path(tenant, name).unlink()
                except FileNotFoundError:
                    raise ArtifactNotFoundError(name) from None

        await self._run(op)
