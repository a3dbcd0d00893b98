"""The tenant-scoped skill operations shared by the gRPC service and host calls.

Both entry points must apply identical validation and versioning, so the
rules live here once and the callers only translate their wire formats.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from server.pages import decode_page_token, encode_page_token, fit_page
from server.quotas import QuotaTable
from server.skills.search import Ranker, make_ranker
from server.skills.validation import (
    DEFAULT_MAX_SOURCE_BYTES,
    validate_name,
    validate_skill,
)
from server.storage.base import Storage
from server.storage.errors import EtagMismatchError, InvalidArgumentError
from server.storage.records import SkillRecord, validate_tenant
from server.storage.text import require_valid_text

_log = logging.getLogger(__name__)

DEFAULT_PAGE_SIZE = 100
MAX_PAGE_SIZE = 1000
DEFAULT_SEARCH_LIMIT = 10
MAX_SEARCH_LIMIT = 100
MAX_QUERY_LENGTH = 4096
#: Ranked search hits, best first (a module-level alias: `list` is a method name below).
Hits = list[tuple[SkillRecord, float]]


class SkillLibrary:
    def __init__(
        self,
        storage: Storage,
        ranker: Ranker | None = None,
        *,
        max_source_bytes: int = DEFAULT_MAX_SOURCE_BYTES,
        quotas: QuotaTable | None = None,
        on_created: Callable[[str], None] | None = None,
    ) -> None:
        """`on_created(tenant)` is called after each skill is created (the server's
        codemode.skill.creations counter), from the API and from sandboxed code alike."""
        self.storage = storage
        # auto: the offline embedding model when installed, else BM25.
        self.ranker = ranker if ranker is not None else make_ranker("auto")
        self.max_source_bytes = max_source_bytes
        self._quotas = quotas
        self._on_created = on_created

    async def create(
        self, tenant: str, name: str, source: str, description: str = ""
    ) -> SkillRecord:
        validate_tenant(tenant)
        _require_text(source, description)
        skill = validate_skill(name, source, description, max_source_bytes=self.max_source_bytes)
        record = SkillRecord.new(skill.name, skill.description, skill.source, skill.parameters)
        max_skills = self._quotas.for_tenant(tenant).skills if self._quotas is not None else 0
        await self.storage.create_skill(tenant, record, max_skills=max_skills)
        if self._on_created is not None:
            self._on_created(tenant)
        await self._prepare_search(tenant, record)
        return record

    async def get(self, tenant: str, name: str) -> SkillRecord:
        validate_tenant(tenant)
        return await self.storage.get_skill(tenant, validate_name(name))

    async def update(
        self,
        tenant: str,
        name: str,
        *,
        source: str | None = None,
        description: str | None = None,
        etag: str = "",
    ) -> SkillRecord:
        """Replaces source and/or description; a given etag must match the stored one."""
        current = await self.get(tenant, name)
        if etag and etag != current.etag:
            raise EtagMismatchError(name)
        new_source = current.source if source is None else source
        # Re-derive the description from docstrings only when the caller replaces the
        # source without giving one and the old description came from the old source.
        new_description = current.description if description is None else description
        _require_text(new_source, new_description)
        skill = validate_skill(
            name, new_source, new_description, max_source_bytes=self.max_source_bytes
        )
        record = current.updated(skill.description, skill.source, skill.parameters)
        # CAS on the etag just read: a concurrent writer in any process makes this ABORTED.
        await self.storage.replace_skill(tenant, record, current.etag)
        await self._prepare_search(tenant, record)
        return record

    async def _prepare_search(self, tenant: str, record: SkillRecord) -> None:
        """Best effort: the skill is stored; a failure here only defers work to the next search."""
        try:
            await self.ranker.prepare(self.storage, tenant, record)
        except asyncio.CancelledError:
            raise
        except Exception:  # noqa: BLE001
            _log.warning("could not precompute search data for skill %s", record.name, exc_info=True)

    async def delete(self, tenant: str, name: str, etag: str = "") -> None:
        validate_tenant(tenant)
        await self.storage.delete_skill(tenant, validate_name(name), etag)
        try:  # best effort, like _prepare_search: a stale vector is never used
            await self.ranker.discard(self.storage, tenant, name)
        except asyncio.CancelledError:
            raise
        except Exception:  # noqa: BLE001
            _log.warning("could not drop search data of skill %s", name, exc_info=True)

    async def list(
        self, tenant: str, page_size: int = 0, page_token: str = ""
    ) -> tuple[list[SkillRecord], str]:
        """A page of skills in name order; the token is the last name of the previous page."""
        validate_tenant(tenant)
        size = DEFAULT_PAGE_SIZE if page_size <= 0 else min(page_size, MAX_PAGE_SIZE)
        if page_token:
            validate_name_token(page_token)
        records = await self.storage.list_skills(tenant, page_token, size + 1)
        page, more = fit_page(records, size, _listed_size)
        return page, page[-1].name if more else ""

    async def search(
        self, tenant: str, query: str, limit: int = 0
    ) -> tuple[Hits, str]:
        """The best `limit` hits (0: DEFAULT_SEARCH_LIMIT) and the ranker's id."""
        results, ranker, _ = await self.search_page(tenant, query, max(limit, 0))
        return results, ranker

    async def search_page(
        self, tenant: str, query: str, page_size: int = 0, page_token: str = ""
    ) -> tuple[Hits, str, str]:
        """One page of ranked hits, the ranker's id and the next page's token ("" on the last).

        The token holds the offset and is bound to the tenant, the query and the ranker,
        so it only continues the same ranking; a skill written between two pages may
        shift the later ones by its own rank (the listing is not a snapshot)."""
        validate_tenant(tenant)
        if len(query) > MAX_QUERY_LENGTH:
            raise InvalidArgumentError(
                f"query is {len(query)} characters; the limit is {MAX_QUERY_LENGTH}",
                field="query",
            )
        if page_size < 0:
            raise InvalidArgumentError("page_size must not be negative", field="page_size")
        n = DEFAULT_SEARCH_LIMIT if page_size == 0 else min(page_size, MAX_SEARCH_LIMIT)
        ranker = self.ranker.ranker_id
        bound = {"tenant": tenant, "query": query, "ranker": ranker}
        offset = 0
        if page_token:
            position = decode_page_token(page_token, "SearchSkills", bound).get("o")
            if not isinstance(position, int) or isinstance(position, bool) or position < 0:
                raise InvalidArgumentError("page_token is not a token returned by SearchSkills", field="page_token")
            offset = position
        ranked = await self.ranker.search(self.storage, tenant, query, offset + n + 1)
        page = ranked[offset : offset + n]
        token = encode_page_token("SearchSkills", bound, {"o": offset + n}) if len(ranked) > offset + n else ""
        return page, ranker, token


def _listed_size(record: SkillRecord) -> int:
    """About the bytes a skill takes in a listing (which carries no source)."""
    parameters = sum(len(p.name) + len(p.type) + len(p.default.encode()) + 16 for p in record.parameters)
    return len(record.description.encode()) + parameters + 128


def _require_text(source: object, description: object) -> None:
    """Sandboxed code can send lone surrogates in JSON; they would make every later
    listing of the tenant fail, so they are refused here (server/storage/text.py)."""
    if isinstance(source, str):
        require_valid_text(source, "source")
    if isinstance(description, str):
        require_valid_text(description, "description")


def validate_name_token(token: str) -> None:
    if len(token) > 1024 or not token.isprintable():
        raise InvalidArgumentError("page_token is invalid", field="page_token")
