"""Point-in-time backups of a FileStorage root, taken while servers keep writing.

A plain `cp -a` of a live store copies every file whole (each one is written by
rename), but it is not a snapshot: it copies half-written `.tmp-*`/`.upload-*`
files, fails when one of them is renamed away mid-copy, and takes each object at a
different moment, so a skill written after the artifact it reads can be in the copy
while the artifact is not. `backup()` instead holds every tenant's writer lock (the
`flock` FileStorage's writers take) just long enough to hard-link each committed
file into a staging tree: committed files are never modified in place (every write
is a new file renamed over the old one), so the links are frozen at that instant.
The slow part, archiving and hashing the data, runs after the locks are released,
so writers pause for the linking only (`BackupReport.locked_seconds`).

A backup is one tar file (one object to ship to off-site storage, and no per-file
creates, which cost up to a millisecond each on a journaling filesystem): the
store's `tenants/...` files, then `codemode-backup.json`, the manifest of every
file's size and SHA-256. It is written as `NAME.partial` and renamed when complete,
so a file with the final name is a whole backup. `restore()` verifies all of it
before it touches the target, then moves the restored tree into place with one
rename. docs/operations.md#backup-and-recovery.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import hashlib
import io
import json
import os
import shutil
import tarfile
import time
from pathlib import Path
from typing import IO, BinaryIO, Iterator

MANIFEST = "codemode-backup.json"
FORMAT = "codemode-file-storage-backup/1"
_STAGING = ".backup-staging"
_BACKUP_LOCK = ".backup.lock"
_CHUNK = 1 << 20


class BackupError(Exception):
    """The backup or restore cannot proceed; the message says why and what to do."""


class DamagedBackupError(BackupError):
    """The backup's files do not match its manifest (or it has none): do not restore it."""


@dataclasses.dataclass(frozen=True)
class BackupReport:
    """What a backup holds, and what it cost the live store."""

    path: str
    tenants: int
    skills: int
    artifacts: int
    files: int
    #: The store's file bytes (skills, vectors, artifacts with their headers).
    bytes: int
    #: Size of the backup file (tar headers and the manifest on top of `bytes`).
    archive_bytes: int
    #: Time every tenant's writer lock was held: the pause writers saw.
    locked_seconds: float
    seconds: float

    def to_json(self) -> dict[str, object]:
        return dataclasses.asdict(self)


def _committed(tenant_dir: str) -> Iterator[tuple[str, list[str]]]:
    """(sub-directory, names) of a tenant's committed files; dot-files are locks, temp
    files and uploads in flight. Plain strings and one scandir per directory: this runs
    while writers wait."""
    for sub in ("skills", "vectors", "artifacts"):
        try:
            with os.scandir(os.path.join(tenant_dir, sub)) as entries:
                listed = [(e.name, e.is_dir(follow_symlinks=False)) for e in entries if not e.name.startswith(".")]
        except FileNotFoundError:
            continue
        yield sub, [name for name, is_dir in listed if not is_dir]
        if sub == "vectors":  # vectors/<model-hash>/<skill>.vec, one file per skill
            for model, is_dir in listed:
                if is_dir:
                    yield from _committed_files(tenant_dir, f"vectors/{model}")
    if os.path.isfile(os.path.join(tenant_dir, "skills.rev")):
        yield "", ["skills.rev"]


def _committed_files(tenant_dir: str, sub: str) -> Iterator[tuple[str, list[str]]]:
    try:
        with os.scandir(os.path.join(tenant_dir, sub)) as entries:
            yield sub, [e.name for e in entries if not e.name.startswith(".") and e.is_file(follow_symlinks=False)]
    except FileNotFoundError:
        return


def _tenants(root: Path) -> list[str]:
    try:
        return sorted(e.name for e in os.scandir(root / "tenants") if e.is_dir() and not e.name.startswith("."))
    except FileNotFoundError:
        return []


@contextlib.contextmanager
def _flock(path: Path) -> Iterator[None]:
    with open(path, "a+b") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def _freeze(root: Path, staging: Path) -> list[str]:
    """Hard-links every committed file into `staging` while no tenant can write.

    Locks are taken tenant by tenant and the tenant list read again until it stops
    growing, so a tenant created meanwhile is either in the snapshot whole or written
    after it. Only one backup runs at a time (the caller holds the backup lock), and
    writers take one tenant lock each, so taking many cannot deadlock.
    """
    with contextlib.ExitStack() as held:
        locked: list[str] = []
        while True:
            new = [t for t in _tenants(root) if t not in locked]
            if not new:
                break
            for tenant in new:
                held.enter_context(_flock(root / "tenants" / tenant / ".lock"))
                locked.append(tenant)
        for tenant in locked:
            tenant_dir = os.path.join(root, "tenants", tenant)
            for sub, names in _committed(tenant_dir):
                into = os.path.join(staging, "tenants", tenant, sub)
                os.makedirs(into, exist_ok=True)
                for name in names:
                    source, target = os.path.join(tenant_dir, sub, name), os.path.join(into, name)
                    try:
                        os.link(source, target)
                    except FileNotFoundError:
                        continue  # cannot happen under the lock, unless the directory is edited by hand
                    except OSError:
                        shutil.copy2(source, target)  # a filesystem without hard links: copy while locked
        return sorted(locked)


class _HashingReader:
    """Hands tarfile the bytes of one file while hashing them: one read of the data."""

    def __init__(self, handle: BinaryIO) -> None:
        self._handle = handle
        self.digest = hashlib.sha256()

    def read(self, size: int = -1) -> bytes:
        chunk = self._handle.read(size)
        self.digest.update(chunk)
        return chunk


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _count(files: dict[str, dict[str, object]]) -> tuple[int, int]:
    skills = sum(1 for p in files if p.split("/")[2:3] == ["skills"] and p.endswith(".json"))
    artifacts = sum(1 for p in files if p.endswith(".artifact"))
    return skills, artifacts


def _report(path: Path, tenants: list[str], files: dict[str, dict[str, object]], locked: float, started: float) -> BackupReport:
    skills, artifacts = _count(files)
    return BackupReport(
        path=str(path),
        tenants=len(tenants),
        skills=skills,
        artifacts=artifacts,
        files=len(files),
        bytes=sum(int(f["size"]) for f in files.values()),  # type: ignore[call-overload]
        archive_bytes=path.stat().st_size if path.is_file() else 0,
        locked_seconds=round(locked, 6),
        seconds=round(time.monotonic() - started, 6),
    )


def _archive(staging: Path, tenants: list[str], partial: Path, root: Path) -> dict[str, dict[str, object]]:
    files: dict[str, dict[str, object]] = {}
    with open(partial, "xb") as out, tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for tenant in tenants:  # the directory first: an empty tenant is kept too
            tar.addfile(_dir_info(f"tenants/{tenant}"))
        for directory, subdirs, names in os.walk(staging):
            subdirs.sort()
            for name in sorted(names):
                source = os.path.join(directory, name)
                rel = Path(source).relative_to(staging).as_posix()
                with open(source, "rb") as handle:
                    info = tar.gettarinfo(arcname=rel, fileobj=handle)
                    info.uid = info.gid = 0
                    info.mtime = int(info.mtime)  # a fractional mtime costs a PAX header per file
                    info.uname = info.gname = ""
                    reader = _HashingReader(handle)
                    tar.addfile(info, reader)
                files[rel] = {"size": info.size, "sha256": reader.digest.hexdigest()}
        manifest = json.dumps(
            {"format": FORMAT, "created_unix": time.time(), "source": str(root), "tenants": tenants, "files": files},
            indent=1, sort_keys=True,
        ).encode()
        info = tarfile.TarInfo(MANIFEST)
        info.size, info.mtime, info.mode = len(manifest), int(time.time()), 0o644
        tar.addfile(info, io.BytesIO(manifest))
    with open(partial, "rb+") as handle:
        os.fsync(handle.fileno())
    return files


def _dir_info(name: str) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.mode, info.mtime = tarfile.DIRTYPE, 0o755, int(time.time())
    return info


def backup(root: str | os.PathLike[str], destination: str | os.PathLike[str]) -> BackupReport:
    """Snapshots the store at `root` (a server's `<data-dir>/storage`) into the new tar file
    `destination`. Safe while any number of servers write the store; they pause only
    while the files are linked."""
    started = time.monotonic()
    root, dest = Path(root).resolve(), Path(destination).resolve()
    if not (root / "tenants").is_dir():
        raise BackupError(f"{root} holds no file storage (no tenants/ directory); pass the server's --data-dir")
    if dest.exists():
        raise BackupError(f"{dest} already exists; back up into a new file")
    if root in dest.parents:
        raise BackupError(f"{dest} is inside the store {root}; back up to another directory")
    if not dest.parent.is_dir():
        raise BackupError(f"{dest.parent} is not a directory")
    partial = dest.with_name(dest.name + ".partial")
    with _flock(root / _BACKUP_LOCK):
        staging_parent = root / _STAGING
        shutil.rmtree(staging_parent, ignore_errors=True)  # left by a backup that was killed
        staging = staging_parent / f"{os.getpid()}-{time.time_ns()}"
        staging.mkdir(parents=True)
        try:
            lock_start = time.monotonic()
            tenants = _freeze(root, staging)
            locked = time.monotonic() - lock_start
            with contextlib.suppress(FileNotFoundError):
                partial.unlink()  # left by a backup that was killed
            files = _archive(staging, tenants, partial, root)
            os.rename(partial, dest)
            _fsync_dir(dest.parent)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                partial.unlink()
            raise
        finally:
            shutil.rmtree(staging_parent, ignore_errors=True)
    return _report(dest, tenants, files, locked, started)


def _members(tar: tarfile.TarFile) -> Iterator[tuple[tarfile.TarInfo, IO[bytes] | None]]:
    for info in tar:
        yield info, tar.extractfile(info) if info.isfile() else None


def _check_name(name: str, info: tarfile.TarInfo) -> None:
    parts = name.split("/")
    if name.startswith("/") or ".." in parts or parts[0] != "tenants" or not (info.isfile() or info.isdir()):
        raise DamagedBackupError(f"the backup holds {name!r}, which is not a file or directory inside tenants/")


def _open(source: Path) -> tarfile.TarFile:
    try:
        return tarfile.open(source, mode="r:")
    except FileNotFoundError:
        raise BackupError(f"{source} does not exist") from None
    except (tarfile.TarError, IsADirectoryError) as exc:
        raise DamagedBackupError(f"{source} is not a codemode storage backup (a tar file): {exc}") from None


def _read_verified(source: Path, extract_to: Path | None = None) -> tuple[dict, dict[str, dict[str, object]]]:
    """One pass over the archive: hashes every file (writing it under `extract_to`, if
    given) and checks the hashes against the manifest, which comes last."""
    seen: dict[str, dict[str, object]] = {}
    manifest: dict | None = None
    try:
        with _open(source) as tar:
            for info, data in _members(tar):
                if info.name == MANIFEST:
                    manifest = json.loads(data.read()) if data else None
                    continue
                _check_name(info.name, info)
                if data is None:
                    if extract_to is not None:
                        (extract_to / info.name).mkdir(parents=True, exist_ok=True)
                    continue
                digest = hashlib.sha256()
                out = None
                if extract_to is not None:
                    target = extract_to / info.name
                    target.parent.mkdir(parents=True, exist_ok=True)
                    out = open(target, "xb")
                try:
                    while chunk := data.read(_CHUNK):
                        digest.update(chunk)
                        if out is not None:
                            out.write(chunk)
                finally:
                    if out is not None:
                        out.close()
                        os.utime(target, (info.mtime, info.mtime))
                seen[info.name] = {"size": info.size, "sha256": digest.hexdigest()}
    except (tarfile.TarError, EOFError, ValueError) as exc:  # a truncated or corrupt archive, a bad manifest
        raise DamagedBackupError(f"backup {source} is damaged: {exc}") from None
    if manifest is None or manifest.get("format") != FORMAT:
        raise DamagedBackupError(f"backup {source} has no {MANIFEST} of format {FORMAT}: not a backup, or one that did not finish")
    expected: dict[str, dict[str, object]] = manifest["files"]
    problems = [f"{name}: missing" for name in sorted(set(expected) - set(seen))]
    problems += [f"{name}: not in the manifest" for name in sorted(set(seen) - set(expected))]
    problems += [f"{name}: size/SHA-256 differ from the manifest" for name in sorted(set(seen) & set(expected)) if seen[name] != expected[name]]
    if problems:
        shown = "; ".join(problems[:5]) + (f"; and {len(problems) - 5} more" if len(problems) > 5 else "")
        raise DamagedBackupError(f"backup {source} is damaged: {shown}")
    return manifest, expected


def verify(source: str | os.PathLike[str]) -> BackupReport:
    """Checks a backup is complete and unchanged: every file of its manifest, size and SHA-256."""
    started = time.monotonic()
    src = Path(source).resolve()
    manifest, files = _read_verified(src)
    return _report(src, manifest.get("tenants", []), files, 0.0, started)


def restore(source: str | os.PathLike[str], root: str | os.PathLike[str]) -> BackupReport:
    """Verifies the backup at `source`, then makes it the store at `root`.

    The store must hold no tenants yet (a new data dir, or one whose `storage/tenants`
    was moved aside) and no server may run on it: a restore replaces a store, it does
    not merge into one. The tree is extracted next to its final place, checked, and
    renamed into it, so a failed restore leaves no half-restored store.
    """
    started = time.monotonic()
    src, root = Path(source).resolve(), Path(root).resolve()
    target = root / "tenants"
    if target.exists() and any(target.iterdir()):
        raise BackupError(
            f"{target} already holds tenants; stop the servers using it and move it aside "
            "(or restore into a new --data-dir)"
        )
    root.mkdir(parents=True, exist_ok=True)
    work = root / f".restore-{os.getpid()}-{time.time_ns()}"
    work.mkdir()
    try:
        manifest, files = _read_verified(src, extract_to=work)
        (work / "tenants").mkdir(exist_ok=True)
        os.sync()  # every extracted file on disk before the rename makes it the store
        with contextlib.suppress(FileNotFoundError):
            target.rmdir()  # the empty directory a fresh server made
        os.rename(work / "tenants", target)
        _fsync_dir(root)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    report = _report(src, manifest.get("tenants", []), files, 0.0, started)
    return dataclasses.replace(report, path=str(root))
