"""The one async interface every storage backend implements.

Services and the host-call handler depend on this only, so FileStorage (the
embedded default) and RedisStorage (shared by many server instances) are
interchangeable. Every method is scoped by tenant; no method can reach
another tenant's data. Backend failures surface as StorageUnavailableError,
and every write is all-or-nothing.

Artifacts are written as a stream (`begin_artifact` -> `ArtifactUpload`), so an
upload never has to be whole in the server's memory: chunks go to a temporary
place in the backend and `commit` makes the artifact visible in one step, or
`abort` removes every trace of it.
"""

from __future__ import annotations

import abc

from server.storage.errors import SkillNotFoundError
from server.storage.records import ArtifactRecord, SkillRecord


class Storage(abc.ABC):
    """Skills, their cached search vectors, and artifacts of many tenants."""

    # Skills -----------------------------------------------------------------

    @abc.abstractmethod
    async def create_skill(self, tenant: str, record: SkillRecord, *, max_skills: int = 0) -> None:
        """Raises SkillAlreadyExistsError if the name is taken, and QuotaExceededError
        if the tenant already has `max_skills` skills (0 = no limit); checked in the
        same atomic step as the write, so concurrent creates cannot overshoot."""

    @abc.abstractmethod
    async def get_skill(self, tenant: str, name: str) -> SkillRecord:
        """Raises SkillNotFoundError."""

    @abc.abstractmethod
    async def replace_skill(self, tenant: str, record: SkillRecord, expected_etag: str) -> None:
        """Stores `record` iff the stored skill's etag is `expected_etag` (compare-and-set).

        Raises SkillNotFoundError or EtagMismatchError.
        """

    @abc.abstractmethod
    async def delete_skill(self, tenant: str, name: str, expected_etag: str = "") -> None:
        """Raises SkillNotFoundError, or EtagMismatchError when an etag is given and stale."""

    @abc.abstractmethod
    async def list_skills(self, tenant: str, after: str, limit: int) -> list[SkillRecord]:
        """Skills with names > `after`, in name order, at most `limit`."""

    @abc.abstractmethod
    async def all_skills(self, tenant: str) -> list[SkillRecord]:
        """Every skill of the tenant (used to build the search index)."""

    @abc.abstractmethod
    async def skills_revision(self, tenant: str) -> str:
        """Changes whenever any skill of the tenant changes.

        Lets a process reuse its in-memory search index until another process
        (or itself) writes, without reading every skill per search.
        """

    async def skill_changes(self, tenant: str, since: str) -> tuple[str, list[str]] | None:
        """The change feed: (current revision, names of the skills created, replaced or
        deleted after revision `since`), or None when the feed cannot say (it was trimmed
        past `since`, `since` is from another store, or the backend keeps no feed): the
        caller then rebuilds from `all_skills`. A name may be listed more than once or
        changed again after the returned revision; callers re-read the named skills.
        This default keeps no feed."""
        revision = await self.skills_revision(tenant)
        return (revision, []) if revision == since else None

    async def get_skills(self, tenant: str, names: list[str]) -> list[SkillRecord]:
        """The named skills that exist (missing names are left out), in no set order."""
        records = []
        for name in names:
            try:
                records.append(await self.get_skill(tenant, name))
            except SkillNotFoundError:
                continue
        return records

    # Search vectors ---------------------------------------------------------

    @abc.abstractmethod
    async def get_vectors(
        self, tenant: str, model_id: str, names: list[str] | None = None
    ) -> dict[str, tuple[str, bytes]]:
        """skill name -> (content hash, vector bytes) cached for that model; only for
        `names` when given (names without a vector are left out)."""

    @abc.abstractmethod
    async def put_vectors(
        self,
        tenant: str,
        model_id: str,
        vectors: dict[str, tuple[str, bytes]],
        *,
        replace_all: bool = False,
    ) -> None:
        """Adds or replaces cached vectors for that model.

        With replace_all, the given vectors become the whole set (drops deleted skills').
        Each skill's vector is its own record: writing one never rewrites the others.
        """

    @abc.abstractmethod
    async def delete_vectors(self, tenant: str, model_id: str, names: list[str]) -> None:
        """Drops the cached vectors of `names` for that model (absent ones are ignored)."""

    # Artifacts --------------------------------------------------------------

    async def put_artifact(
        self, tenant: str, record: ArtifactRecord, data: bytes, *, max_tenant_bytes: int = 0
    ) -> None:
        """Creates or replaces an artifact whose data is already in memory."""
        upload = await self.begin_artifact(tenant, record)
        try:
            await upload.write(data)
            await upload.commit(record, max_tenant_bytes=max_tenant_bytes)
        except BaseException:
            await upload.abort()
            raise

    @abc.abstractmethod
    async def begin_artifact(self, tenant: str, draft: ArtifactRecord) -> "ArtifactUpload":
        """Starts writing an artifact. `draft` has the final name, type, description
        and metadata; size, sha256 and time may still be placeholders."""

    @abc.abstractmethod
    async def artifact_bytes(self, tenant: str) -> int:
        """Total data bytes of the tenant's artifacts (what the artifact_bytes quota counts)."""

    @abc.abstractmethod
    async def get_artifact(self, tenant: str, name: str) -> ArtifactRecord:
        """Metadata only. Raises ArtifactNotFoundError."""

    @abc.abstractmethod
    async def read_artifact(self, tenant: str, name: str) -> tuple[ArtifactRecord, bytes]:
        """Metadata and data, consistent with each other. Raises ArtifactNotFoundError."""

    @abc.abstractmethod
    async def list_artifacts(self, tenant: str, after: str, limit: int) -> list[ArtifactRecord]:
        """Artifacts with names > `after`, in name order, at most `limit`."""

    @abc.abstractmethod
    async def delete_artifact(self, tenant: str, name: str) -> None:
        """Raises ArtifactNotFoundError."""

    async def close(self) -> None:  # noqa: B027 - optional hook: backends without connections keep the no-op
        """Releases connections; idempotent."""


class ArtifactUpload(abc.ABC):
    """One artifact being written; nothing is visible to readers before `commit`."""

    @abc.abstractmethod
    async def write(self, chunk: bytes) -> None:
        """Appends data; the backend holds it, not the caller."""

    @abc.abstractmethod
    async def commit(self, record: ArtifactRecord, *, max_tenant_bytes: int = 0) -> None:
        """Atomically makes `record` with the written data the artifact of its name.

        Raises QuotaExceededError (and aborts) when the tenant's artifact bytes, this
        artifact replacing any of the same name, would exceed `max_tenant_bytes`
        (0 = no limit); the check and the write are one atomic step.
        """

    @abc.abstractmethod
    async def abort(self) -> None:
        """Removes everything written so far; idempotent, never raises."""
