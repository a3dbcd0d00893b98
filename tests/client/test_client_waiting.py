"""How the client judges a settled session and what it sends while waiting: no server
needed, the inputs are the Session messages WaitSession returns (codemode._waiting)."""

from __future__ import annotations

import time

import pytest

import codemode
from codemode import _requests as req
from codemode import _waiting as waiting
from codemode.results import SkillSearchPage
from codemode.v1 import session_pb2, skill_pb2

FAILED_INSTALL = session_pb2.DependencyInstall(
    state=session_pb2.DependencyInstall.STATE_FAILED, error_reason="DEPS_INSTALL_FAILED", error_message="no cm-tiny-missing"
)


def session(**fields: object) -> session_pb2.Session:
    return session_pb2.Session(name="sessions/s1", **fields)  # type: ignore[arg-type]


def test_starting_and_installing_are_transient():
    assert waiting.is_transient(session(state=session_pb2.Session.STATE_STARTING))
    assert waiting.is_transient(session(state=session_pb2.Session.STATE_INSTALLING))
    for state in (session_pb2.Session.STATE_READY, session_pb2.Session.STATE_BUSY, session_pb2.Session.STATE_FAILED):
        assert not waiting.is_transient(session(state=state))


def test_a_ready_session_is_no_error_and_an_older_failed_install_is_not_this_calls():
    assert waiting.settled_error(session(state=session_pb2.Session.STATE_READY), install_started=False) is None
    ready_after_old_failure = session(state=session_pb2.Session.STATE_READY, last_install=FAILED_INSTALL)
    assert waiting.settled_error(ready_after_old_failure, install_started=False) is None


def test_a_failed_install_is_a_dependency_install_error():
    settled = session(state=session_pb2.Session.STATE_READY, last_install=FAILED_INSTALL)
    error = waiting.settled_error(settled, install_started=True)
    assert isinstance(error, codemode.DependencyInstallError) and isinstance(error, codemode.FailedPreconditionError)
    assert (error.code.name, error.reason, error.message) == ("FAILED_PRECONDITION", "DEPS_INSTALL_FAILED", "no cm-tiny-missing")
    assert error.metadata == {"session": "sessions/s1"} and error.session is settled


def test_a_failed_session_names_why():
    start = waiting.settled_error(session(state=session_pb2.Session.STATE_FAILED, state_message="no docker"), install_started=False)
    assert isinstance(start, codemode.SessionFailedError) and isinstance(start, codemode.UnavailableError)
    assert (start.reason, start.message) == ("SANDBOX_START_FAILED", "no docker")
    start_deps = session(state=session_pb2.Session.STATE_FAILED, state_message="deps failed", last_install=FAILED_INSTALL)
    error = waiting.settled_error(start_deps, install_started=False)
    assert isinstance(error, codemode.DependencyInstallError)
    assert (error.reason, error.message) == ("DEPS_INSTALL_FAILED", "deps failed")


def test_each_wait_call_asks_at_most_30s_and_never_past_the_deadline():
    request, rpc_deadline = waiting.wait_call("sessions/s1", time.monotonic() + 300)
    assert request.name == "sessions/s1" and request.timeout.seconds == 30
    assert rpc_deadline == 30 + waiting.WAIT_SESSION_MARGIN_SECONDS
    request, _ = waiting.wait_call("sessions/s1", time.monotonic() + 2)
    assert 1 < request.timeout.ToTimedelta().total_seconds() <= 2
    late = waiting.out_of_time(session(state=session_pb2.Session.STATE_STARTING), time.monotonic() - 1)
    assert isinstance(late, codemode.DeadlineExceededError) and late.reason == "DEADLINE_EXCEEDED"
    assert waiting.out_of_time(session(state=session_pb2.Session.STATE_STARTING), time.monotonic() + 5) is None


def test_start_up_deps_extend_the_create_deadline():
    assert req.create_session_deadline(session_pb2.SessionConfig()) == req.CREATE_SESSION_DEADLINE_SECONDS
    with_deps = session_pb2.SessionConfig(deps=["x"], sync_deps_on_start=True)
    assert req.create_session_deadline(with_deps) == req.CREATE_SESSION_DEADLINE_SECONDS + req.DEPS_INSTALL_DEADLINE_SECONDS


def test_optional_config_fields_keep_an_explicit_false():
    request = req.create_session_request({"allowRuntimeDeps": False}, None, None, None, None)
    assert request.session.config.HasField("allow_runtime_deps") and not request.session.config.allow_runtime_deps
    assert not req.create_session_request(None, None, None, None, None).session.config.HasField("allow_runtime_deps")


@pytest.mark.parametrize("data", [b"", b"x" * 5, "é" * 3, {"a": 1}])
def test_upload_declares_the_size_it_sends(data):
    requests = list(req.upload_requests("", "a", data, None, "", None))
    assert requests[0].size_bytes == sum(len(r.chunk) for r in requests[1:])


def test_a_search_page_is_a_sequence_of_its_hits():
    hits = tuple(skill_pb2.SkillSearchResult(skill=skill_pb2.Skill(name=f"skills/s{i}"), score=1.0 - i / 10) for i in range(3))
    page = SkillSearchPage(hits, "next", "bm25")
    assert len(page) == 3 and page[0].skill.name == "skills/s0" and [h.skill.name for h in page][-1] == "skills/s2"
    assert page.next_page_token == "next" and page.ranker == "bm25" and bool(SkillSearchPage(())) is False
