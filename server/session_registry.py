"""Where the live sessions are kept, and how a caller finds and pages through them.

Separate from the lifecycle (server/sessions.py) because the keeping is what changes
when several control-plane instances serve one service (issue 11): the lifecycle asks
this module for sessions and never touches the dict itself, so a registry shared
through Redis can take this one's place behind the same calls.

What any registry must provide, and what a shared one must add:

- `get(session_id)`: the session or None. Shared: the record (tenant, principal,
  state, limits, sandbox endpoint, owning instance, incarnation id, lease expiry),
  from which an instance that does not own the session builds its view of it.
- `add(session, request_id)`: records a new session and, when the create request
  carried one, its request id. The lifecycle has already refused an id in use, with
  no await in between, which is enough in one process; a shared registry must make
  the insert itself conditional (compare-and-set, in Lua), and map the
  (tenant, request_id) pair in the same step, so two instances creating one id or
  retrying one request never both win.
- `by_request(tenant, request_id)`: the session an earlier create with this request
  id made, so a retry returns it; scoped by tenant so one tenant's id never finds
  another's session.
- `forget(session)`: drops the session and its request ids, only if the registered
  session is still this one (an incarnation check; shared: compare-and-delete on the
  incarnation id, so a stale instance cannot remove a successor).
- `live_sessions()`: every session, for admission (server-wide and per-tenant
  limits), idle expiry, shutdown and the metrics' live/busy gauges.
  Shared: an instance expires and stops only the sessions it owns, and ownership is
  a lease an instance renews; once it lapses another instance may adopt the session
  by compare-and-set on the owner and incarnation.
- `list_page(page_size, page_token, tenant)`: one page in (create_time, id) order
  with an opaque token that resumes after the last one, so pages stay stable while
  sessions come and go; the token is bound to the tenant filter it was issued for.

The execution lock is not the registry's: it lives in server/execution_lock.py,
which a lease with a fencing token, kept in the shared record, replaces.
"""

from __future__ import annotations

import base64
import json

from server.errors import invalid_argument
from server.pages import fit_page
from server.session_model import Session

DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 1000


class SessionRegistry:
    """The in-process registry: one dict, read and written on the server's event loop
    only, so plain dict operations need no lock."""

    def __init__(self) -> None:
        self._sessions: dict[str, Session] = {}
        self._create_requests: dict[tuple[str, str], str] = {}  # (tenant, request_id) -> session id

    def get(self, session_id: str) -> Session | None:
        return self._sessions.get(session_id)

    def by_request(self, tenant: str, request_id: str) -> Session | None:
        session_id = self._create_requests.get((tenant, request_id))
        return None if session_id is None else self._sessions.get(session_id)

    def add(self, session: Session, request_id: str = "") -> None:
        self._sessions[session.id] = session
        if request_id:
            self._create_requests[(session.tenant, request_id)] = session.id

    def forget(self, session: Session) -> None:
        if self._sessions.get(session.id) is session:
            del self._sessions[session.id]
        for request_key, session_id in list(self._create_requests.items()):
            if session_id == session.id:
                del self._create_requests[request_key]

    def live_sessions(self) -> list[Session]:
        return list(self._sessions.values())

    def list_page(self, page_size: int, page_token: str, tenant: str) -> tuple[list[Session], str]:
        """One page of sessions, oldest first (AIP-158 page_size rules)."""
        if page_size < 0:
            raise invalid_argument("page_size must not be negative", field="page_size")
        page_size = min(page_size or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)
        after: tuple[float, str] | None = None
        if page_token:
            after = decode_page_token(page_token, tenant)
        sessions = sorted(
            (s for s in self._sessions.values() if not tenant or s.tenant == tenant),
            key=lambda s: (s.create_time, s.id),
        )
        if after is not None:
            sessions = [s for s in sessions if (s.create_time, s.id) > after]
        # Also ends at ~2 MiB so every page reaches a default client (server/pages.py).
        page, more = fit_page(sessions, page_size, lambda s: s.to_proto().ByteSize())
        next_token = ""
        if more:
            last = page[-1]
            next_token = encode_page_token(last.create_time, last.id, tenant)
        return page, next_token


def encode_page_token(create_time: float, session_id: str, tenant: str) -> str:
    raw = json.dumps({"t": create_time, "id": session_id, "tenant": tenant}).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_page_token(token: str, tenant: str) -> tuple[float, str]:
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        data = json.loads(raw)
        position = (float(data["t"]), str(data["id"]))
        token_tenant = data["tenant"]
    except Exception:  # noqa: BLE001 - any malformed token is the caller's error
        raise invalid_argument("page_token is not a token returned by ListSessions", field="page_token") from None
    if token_tenant != tenant:
        raise invalid_argument("page_token was issued for a different tenant filter", field="page_token")
    return position
