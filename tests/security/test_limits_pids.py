"""A bounded fork bomb (at most 200 forks) against the session's pids limit."""

from __future__ import annotations

from tests.security import attacks
from tests.security.conftest import open_session

PIDS_LIMIT = 32


def test_fork_stops_at_pids_limit(client, server):  # type: ignore[no-untyped-def]
    session, _, _ = open_session(client, server, {"pidsLimit": str(PIDS_LIMIT)})
    try:
        report = attacks.must_report(session, attacks.FORK_BOMB, timeout=120, attempts=200)
        assert report["forked"] < PIDS_LIMIT, (
            f"sandboxed code forked {report['forked']} processes with pidsLimit={PIDS_LIMIT} "
            f"(first failure: {report['failure']})"
        )
        assert report["failure"] in ("EAGAIN", "ENOMEM"), f"fork failed for another reason: {report}"
    finally:
        client.delete_session(session.name)
