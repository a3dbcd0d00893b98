"""Runs conformance/cases.json against a server with the Python client (`codemode`).

The semantics of every field are defined in conformance/README.md; the Go,
TypeScript and Java runners implement the same rules, so keep them in step.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import codemode
from codemode.v1 import artifact_pb2, session_pb2

CASES_PATH = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "cases.json")
RETRY_WHILE_BUSY_SECONDS = 30.0
#: Steps that act on the case's session, so the runner creates one for them.
SESSION_STEPS = (
    "list_dependencies", "add_dependency", "get_session", "delete_session", "list_sessions",
    "attach_execution", "cancel_execution",
)


class CaseSkipped(Exception):
    """The server lacks a feature the case `requires` (it answered UNIMPLEMENTED)."""


def load_cases(language: str = "py", principal: str = "token") -> list[dict[str, Any]]:
    """Cases with `${uid}` replaced by an id unique to this run, language and principal."""
    uid = language + principal + secrets.token_hex(4)
    with open(CASES_PATH, encoding="utf-8") as handle:
        raw = handle.read().replace("${uid}", uid)
    return list(json.loads(raw)["cases"])


@dataclass
class Observed:
    """What one execute step produced, in arrival order."""

    outputs: list[codemode.Output] = field(default_factory=list)
    result: codemode.Result | None = None
    error: codemode.Error | None = None
    finished: codemode.Finished | None = None
    first_output_at: float | None = None
    outputs_before_result: int | None = None
    finished_at: float | None = None
    call_error: codemode.CodemodeError | None = None
    cancelled_by_client: bool = False
    #: The name from the started event, and every non-heartbeat event as (sequence, signature).
    execution: str = ""
    events: list[tuple[int, str]] = field(default_factory=list)
    #: What attach_after_outputs read, after ``attached_after``.
    attached: list[tuple[int, str]] = field(default_factory=list)
    attached_after: int = 0
    #: A failed CancelExecution or AttachExecution made mid-stream.
    side_error: codemode.CodemodeError | None = None

    def text(self, stream: str) -> str:
        return b"".join(o.data for o in self.outputs if o.stream == stream).decode("utf-8", "replace")


def signature(event: codemode.ExecutionEvent) -> tuple[int, str]:
    """One event as the cases compare it (conformance/README.md, "Event signatures")."""
    if isinstance(event, codemode.Started):
        described = f"started {event.execution}"
    elif isinstance(event, codemode.Output):
        described = f"output {event.stream} {event.data.decode('latin-1')}"
    elif isinstance(event, codemode.Result):
        described = f"result {json.dumps(event.json or '')} {json.dumps(event.repr)}"
    elif isinstance(event, codemode.Error):
        described = f"error {event.error.type} {event.error.message}"
    else:
        described = f"finished {event.status.name}"
    return event.sequence, described


@dataclass
class CaseState:
    """What a case's later steps need from earlier ones (conformance/README.md, "The last execution")."""

    session: codemode.Session | None = None
    last_execution: str = ""
    last_events: list[tuple[int, str]] = field(default_factory=list)


def session_config(wanted: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """A cases.json session spec in the proto's JSON form: absent keys stay unset,
    present ones are sent even when false."""
    names = {
        "output_budget_bytes": "outputBudgetBytes",
        "deps": "deps",
        "allow_runtime_deps": "allowRuntimeDeps",
        "sync_deps_on_start": "syncDepsOnStart",
    }
    config = {names[key]: value for key, value in (wanted or {}).items()}
    return config or None


def principals_in(env: Mapping[str, str]) -> list[str]:
    """The principals every case runs as: the token one, and the mTLS one when the
    harness started the server with a client CA (--mtls)."""
    return ["token", "mtls"] if env.get("CODEMODE_CONFORMANCE_CA") else ["token"]


@dataclass(frozen=True)
class Credentials:
    """What one client presents: a token ("" sends none) and, over TLS, a certificate."""

    token: str
    tls: codemode.TLSConfig | None


def credentials(env: Mapping[str, str], principal: str) -> dict[str, Credentials]:
    """The `auth` clients of one principal's run (conformance/README.md, "Principals")."""
    ca = env.get("CODEMODE_CONFORMANCE_CA")
    if principal == "mtls" and not ca:
        raise ValueError("the mTLS principal needs a server started with --mtls")

    def tls(certificate: str) -> codemode.TLSConfig | None:
        if not ca:
            return None
        return codemode.TLSConfig(
            root_certificates=ca,
            client_certificate=env[f"CODEMODE_CONFORMANCE_{certificate}_CERT"],
            client_key=env[f"CODEMODE_CONFORMANCE_{certificate}_KEY"],
        )

    token = env["CODEMODE_CONFORMANCE_TOKEN"]
    own = tls("CLIENT") if principal == "mtls" else tls("UNMAPPED")
    return {
        "principal": Credentials("" if principal == "mtls" else token, own),
        "none": Credentials("", tls("UNMAPPED")),
        "wrong": Credentials(token + "-wrong", own),
        "other_tenant": Credentials(env["CODEMODE_CONFORMANCE_OTHER_TOKEN"], tls("UNMAPPED")),
    }


class Runner:
    def __init__(self, env: Mapping[str, str], principal: str = "token") -> None:
        self.target = env["CODEMODE_CONFORMANCE_TARGET"]
        self.token = env["CODEMODE_CONFORMANCE_TOKEN"]
        self.credentials = credentials(env, principal)
        self._clients: dict[tuple[str, str], codemode.Client] = {}
        self.client = self.client_for("principal")

    def client_for(self, auth: str = "principal", tenant: str = "") -> codemode.Client:
        """One client per (auth, tenant): the Python client names its tenant when built."""
        key = (auth, tenant)
        if key not in self._clients:
            presented = self.credentials[auth]
            # token="" rather than None: None would pick up CODEMODE_API_TOKEN.
            self._clients[key] = codemode.Client(self.target, token=presented.token, tls=presented.tls, tenant=tenant)
        return self._clients[key]

    def close(self) -> None:
        for client in self._clients.values():
            client.close()

    def run_case(self, case: dict[str, Any]) -> None:
        if case.get("requires") == "skills":
            self._require_skills()
        session = None
        if any(
            ("execute" in step and "session" not in step["execute"]) or any(kind in step for kind in SESSION_STEPS)
            for step in case["steps"]
        ):
            # The client's own create_session, which waits until the session is READY.
            session = self.client.create_session(config=session_config(case.get("session")))
        state = CaseState(session)
        try:
            for index, step in enumerate(case["steps"]):
                try:
                    self._run_step(step, state)
                except AssertionError as failure:
                    raise AssertionError(f"step {index + 1} ({next(iter(step))}): {failure}") from None
        finally:
            if session is not None:
                try:
                    session.delete()
                except codemode.CodemodeError:
                    pass

    def _require_skills(self) -> None:
        try:
            self.client.skills.search("probe", page_size=1)
        except codemode.CodemodeError as error:
            if error.code.name == "UNIMPLEMENTED":
                raise CaseSkipped("the server does not implement SkillStoreService") from error
            raise

    def _run_step(self, step: dict[str, Any], state: CaseState) -> None:
        session = state.session
        expect = step.get("expect", {})
        auth, tenant = step.get("auth", "principal"), step.get("tenant", "")
        client = self.client_for(auth, tenant)
        if "execute" in step:
            observed = self._execute(step["execute"], client, session)
            try:
                check_execute(observed, expect, state, 0)
            finally:
                if observed.execution:
                    state.last_execution, state.last_events = observed.execution, observed.events
            return
        if "attach_execution" in step:
            spec = step["attach_execution"]
            assert session is not None
            name = f"{session.name}/executions/{spec['execution_id']}" if "execution_id" in spec else state.last_execution
            after = spec.get("after_sequence", 0)
            observed = Observed()
            try:
                # The Python way to attach: the same Execution type session.stream returns.
                with client.attach_execution(name, after_sequence=after) as execution:
                    observe(client, execution, {}, observed)
            except codemode.CodemodeError as error:
                observed.call_error = error
            check_execute(observed, expect, state, after)
            return
        if "close_session" in step:
            assert session is not None
            session.__exit__(None, None, None)  # what `with client.create_session() as s:` runs
            return
        if "plaintext_client" in step:
            check_plaintext_client(step["plaintext_client"]["target"], self.token, expect)
            return
        skills = client.skills
        artifacts = client.artifacts
        try:
            if "get_session" in step:
                assert session is not None
                info = client.get_session(session.name).info
                if "session_tenant" in expect:
                    assert info.tenant == expect["session_tenant"], f"session tenant {info.tenant!r}, want {expect['session_tenant']!r}"
                if "session_state" in expect:
                    got = session_pb2.Session.State.Name(info.state).removeprefix("STATE_")
                    assert got == expect["session_state"], f"session state {got}, want {expect['session_state']} ({info.state_message})"
            elif "create_session" in step:
                with client.create_session(config=session_config(step["create_session"])) as created:
                    assert "error_status" not in expect, f"expected {expect['error_status']}, the call succeeded"
                    assert created.info.state == session_pb2.Session.STATE_READY, f"create_session returned {created.info}"
            elif "cancel_execution" in step:
                cancelled = client.cancel_execution(state.last_execution)
                if "execution_cancelled" in expect:
                    assert cancelled == expect["execution_cancelled"], f"cancelled {cancelled}, want {expect['execution_cancelled']}"
            elif "delete_session" in step:
                assert session is not None
                client.delete_session(session.name)  # the RPC itself: Session.delete() forgives NOT_FOUND
            elif "list_sessions" in step:
                assert session is not None
                names = [listed.name for listed in client.list_sessions(tenant=tenant or None)]
                if "lists_case_session" in expect:
                    listed = session.name in names
                    assert listed == expect["lists_case_session"], f"case session {session.name} listed: {listed} ({names})"
            elif "upload_artifact" in step:
                spec = step["upload_artifact"]
                payload = (spec["data"] * spec.get("repeat", 1)).encode("utf-8")
                artifact = artifacts.put(spec["id"], payload, type=spec["type"].lower(), description=spec.get("description", ""))
                check_artifact(artifact, expect)
            elif "get_artifact" in step:
                check_artifact(artifacts.info(step["get_artifact"]["id"]), expect)
            elif "download_artifact" in step:
                downloaded = artifacts.get(step["download_artifact"]["id"])
                check_artifact(downloaded.artifact, expect)
                check_downloaded(downloaded.artifact, downloaded.data, expect)
            elif "list_artifacts" in step:
                check_names([a.name for a in artifacts.list()], expect, "artifacts")
            elif "delete_artifact" in step:
                artifacts.delete(step["delete_artifact"]["id"])
            elif "list_dependencies" in step:
                assert session is not None
                check_dependencies(session.deps.list(), expect)
            elif "add_dependency" in step:
                assert session is not None
                check_dependencies(session.deps.add(step["add_dependency"]["package"]).dependencies, expect)
            elif "create_skill" in step:
                spec = step["create_skill"]
                skill = skills.create(spec["id"], spec["source"], description=spec.get("description", ""))
                check_skill(skill, expect)
            elif "update_skill" in step:
                spec = step["update_skill"]
                skill = skills.update(spec["id"], source=spec["source"], description=spec["description"], etag=spec.get("etag", ""))
                check_skill(skill, expect)
            elif "get_skill" in step:
                check_skill(skills.get(step["get_skill"]["id"]), expect)
            elif "search_skills" in step:
                check_names([hit.skill.name for hit in skills.search(step["search_skills"]["query"]).results], expect, "search results")
            elif "delete_skill" in step:
                skills.delete(step["delete_skill"]["id"])
            else:
                raise AssertionError(f"unknown step {step}")
        except codemode.CodemodeError as error:
            check_call_error(error, expect)
            return
        assert "error_status" not in expect, f"expected {expect['error_status']}, the call succeeded"

    def _execute(self, spec: dict[str, Any], client: codemode.Client, session: codemode.Session | None) -> Observed:
        if "session" in spec:
            handle = codemode.Session(client, session_pb2.Session(name=spec["session"]))
        else:
            assert session is not None
            handle = codemode.Session(client, session.info)
        deadline = time.monotonic() + RETRY_WHILE_BUSY_SECONDS
        while True:
            observed = self._execute_once(client, handle, spec)
            busy = observed.call_error is not None and observed.call_error.reason == "SESSION_BUSY"
            if not (busy and spec.get("retry_while_busy") and time.monotonic() < deadline):
                return observed
            time.sleep(0.1)

    @staticmethod
    def _execute_once(client: codemode.Client, session: codemode.Session, spec: dict[str, Any]) -> Observed:
        observed = Observed()
        timeout = spec.get("execution_timeout_seconds")
        try:
            deadline = spec.get("call_deadline_seconds")
            with session.stream(spec["code"], timeout=timeout, deadline=deadline, request_id=spec.get("request_id")) as execution:
                observe(client, execution, spec, observed)
        except codemode.CodemodeError as error:
            observed.call_error = error
        return observed


def observe(client: codemode.Client, execution: codemode.Execution, spec: dict[str, Any], observed: Observed) -> None:
    """Reads an execution stream (Execute or AttachExecution) to its end; ``spec`` says what to do mid-stream."""
    for event in execution:
        now = time.monotonic()
        observed.events.append(signature(event))
        if isinstance(event, codemode.Started):
            observed.execution = event.execution
        elif isinstance(event, codemode.Output):
            observed.outputs.append(event)
            if observed.first_output_at is None:
                observed.first_output_at = now
            if spec.get("cancel_after_first_output"):
                observed.cancelled_by_client = True
                execution.cancel()
                break
            if spec.get("cancel_execution_after_first_output") and len(observed.outputs) == 1:
                try:
                    client.cancel_execution(observed.execution)
                except codemode.CodemodeError as error:
                    observed.side_error = error
            if len(observed.outputs) == spec.get("attach_after_outputs"):
                # A second stream on the same execution while this one stays open; the
                # last sequence seen counts heartbeats too (they carry the one before).
                observed.attached_after = execution.last_sequence
                try:
                    with client.attach_execution(observed.execution, after_sequence=execution.last_sequence) as attached:
                        observed.attached = [signature(e) for e in attached]
                except codemode.CodemodeError as error:
                    observed.side_error = error
        elif isinstance(event, codemode.Result):
            observed.result = event
            observed.outputs_before_result = len(observed.outputs)
        elif isinstance(event, codemode.Error):
            observed.error = event
        elif isinstance(event, codemode.Finished):
            observed.finished, observed.finished_at = event, now


def check_contiguous(events: list[tuple[int, str]], after: int, what: str) -> None:
    """Sequences after+1, after+2, ... with no gap or repeat."""
    sequences = [sequence for sequence, _ in events]
    assert sequences == list(range(after + 1, after + 1 + len(events))), f"{what}: sequences {sequences} after {after}"


def check_same_events(got: list[tuple[int, str]], want: list[tuple[int, str]], after: int, what: str) -> None:
    """``got`` has the signatures of ``want``'s events above ``after``."""
    tail = [event for event in want if event[0] > after]
    assert got == tail, f"{what}: events {got}, want {tail}"


def check_call_error(error: codemode.CodemodeError, expect: dict[str, Any]) -> None:
    wanted = expect.get("error_status")
    assert wanted is not None, f"unexpected call failure: {error}"
    assert error.code.name == wanted["code"], f"status {error.code.name}, want {wanted['code']} ({error})"
    if "reason" in wanted:
        assert (error.reason or "") == wanted["reason"], f"reason {error.reason!r}, want {wanted['reason']!r}"
    # The client's typed accessors, not the raw status: RetryInfo and BadRequest as it decodes them.
    if "retry_delay_seconds" in wanted:
        assert error.retry_delay is not None, f"no retry delay (RetryInfo) in {error!r}"
        assert round(error.retry_delay * 1e9) == round(wanted["retry_delay_seconds"] * 1e9), (
            f"retry delay {error.retry_delay}s, want {wanted['retry_delay_seconds']}s"
        )
    if "field_violation" in wanted:
        fields = [violation.field for violation in error.field_violations]
        assert wanted["field_violation"] in fields, f"field violations {fields} lack {wanted['field_violation']!r}"


def check_names(names: list[str], expect: dict[str, Any], what: str) -> None:
    if "contains_name" in expect:
        assert expect["contains_name"] in names, f"{expect['contains_name']} not in {what} {names}"
    if "lacks_name" in expect:
        assert expect["lacks_name"] not in names, f"{expect['lacks_name']} in {what} {names}"


def check_skill(skill: Any, expect: dict[str, Any]) -> None:
    assert "error_status" not in expect, f"expected {expect['error_status']}, the call succeeded"
    if "name" in expect:
        assert skill.name == expect["name"], f"skill name {skill.name!r}, want {expect['name']!r}"
    if "source_contains" in expect:
        assert expect["source_contains"] in skill.source, f"source {skill.source!r} lacks {expect['source_contains']!r}"


def check_plaintext_client(target: str, token: str, expect: dict[str, Any]) -> None:
    try:
        client = codemode.Client(target, token=token)
    except ValueError as refusal:
        wanted = expect.get("refused_contains")
        assert wanted is not None, f"plaintext client to {target} refused: {refusal}"
        assert wanted in str(refusal), f"refusal {str(refusal)!r} lacks {wanted!r}"
        return
    client.close()
    assert "refused_contains" not in expect, f"a plaintext client with a token to {target} was allowed"


def check_artifact(artifact: Any, expect: dict[str, Any]) -> None:
    assert "error_status" not in expect, f"expected {expect['error_status']}, the call succeeded"
    wanted = expect.get("artifact", {})
    type_name = artifact_pb2.ArtifactType.Name(artifact.type).removeprefix("ARTIFACT_TYPE_")
    got = {
        "name": artifact.name,
        "type": type_name,
        "description": artifact.description,
        "size_bytes": artifact.size_bytes,
        "sha256": artifact.sha256,
    }
    for key, value in wanted.items():
        assert got[key] == value, f"artifact {key} {got[key]!r}, want {value!r}"


def check_downloaded(artifact: Any, data: bytes, expect: dict[str, Any]) -> None:
    if "data_sha256" in expect:
        digest = hashlib.sha256(data).hexdigest()
        assert digest == expect["data_sha256"], f"downloaded {len(data)} bytes with sha256 {digest}"
        assert artifact.sha256 == digest, f"artifact sha256 {artifact.sha256} differs from the data's {digest}"
    if "data_json" in expect:
        assert json.loads(data) == expect["data_json"], f"downloaded {data[:200]!r}, want {expect['data_json']!r}"


def check_dependencies(dependencies: list[str], expect: dict[str, Any]) -> None:
    assert "error_status" not in expect, f"expected {expect['error_status']}, the call succeeded"
    if "dependencies" in expect:
        assert list(dependencies) == expect["dependencies"], f"dependencies {dependencies}, want {expect['dependencies']}"


def merged_streams(outputs: list[codemode.Output]) -> Iterator[str]:
    previous = None
    for output in outputs:
        if output.stream != previous:
            yield output.stream
            previous = output.stream


def check_execute(observed: Observed, expect: dict[str, Any], state: CaseState, after: int) -> None:
    assert observed.side_error is None, f"mid-stream call failed: {observed.side_error}"
    if observed.call_error is not None:
        if expect.get("cancelled"):
            assert observed.call_error.code.name == "CANCELLED", f"cancel ended with {observed.call_error}"
            return
        check_call_error(observed.call_error, expect)
        return
    assert "error_status" not in expect, f"expected {expect['error_status']}, the call succeeded"
    if expect.get("cancelled"):
        assert observed.cancelled_by_client and observed.finished is None, "the call was not cancelled"
        return
    finished = observed.finished
    assert finished is not None, "no finished event"
    if "status" in expect:
        assert finished.status.name == expect["status"], f"status {finished.status.name}, want {expect['status']} ({finished.message})"
    if "value" in expect:
        assert observed.result is not None and observed.result.json is not None, f"no JSON value (result {observed.result})"
        assert json.loads(observed.result.json) == expect["value"], f"value {observed.result.json}, want {expect['value']!r}"
    if "value_repr" in expect:
        assert observed.result is not None and observed.result.repr == expect["value_repr"], f"repr of {observed.result}"
    if expect.get("no_value"):
        assert observed.result is None, f"unexpected value {observed.result}"
    for stream in ("stdout", "stderr"):
        if stream in expect:
            assert observed.text(stream) == expect[stream], f"{stream} {observed.text(stream)!r}, want {expect[stream]!r}"
    if "stdout_ends_with" in expect:
        assert observed.text("stdout").endswith(expect["stdout_ends_with"]), f"stdout ends {observed.text('stdout')[-40:]!r}"
    if "output_order" in expect:
        order = list(merged_streams(observed.outputs))
        assert order == expect["output_order"], f"output order {order}, want {expect['output_order']}"
    if "first_output_before_finished_seconds" in expect:
        assert observed.first_output_at is not None and observed.finished_at is not None
        gap = observed.finished_at - observed.first_output_at
        assert gap >= expect["first_output_before_finished_seconds"], f"first output only {gap:.3f}s before finished"
    if "outputs_before_result_at_least" in expect:
        before = observed.outputs_before_result
        assert before is not None, "no result event"
        assert before >= expect["outputs_before_result_at_least"], f"only {before} output events before the result"
    if "error" in expect:
        wanted = expect["error"]
        assert observed.error is not None, "no error event"
        error = observed.error.error
        assert error.type == wanted["type"], f"error type {error.type}, want {wanted['type']}"
        if "message_contains" in wanted:
            assert wanted["message_contains"] in error.message, f"error message {error.message!r}"
        for fragment in wanted.get("traceback_contains", []):
            assert fragment in error.traceback, f"traceback lacks {fragment!r}: {error.traceback!r}"
    if "truncated" in expect:
        stream = expect["truncated"]["stream"]
        total = expect["truncated"]["total_bytes"]
        written = getattr(finished, f"{stream}_bytes")
        dropped = getattr(finished, f"{stream}_truncated_bytes")
        received = sum(len(o.data) for o in observed.outputs if o.stream == stream)
        reported = sum(o.dropped_bytes_before for o in observed.outputs if o.stream == stream)
        assert written == total, f"{stream}_bytes {written}, want {total}"
        assert dropped > 0, "nothing reported as truncated"
        assert received + dropped == total, f"received {received} + truncated {dropped} != {total}"
        assert reported == dropped, f"dropped_bytes_before adds up to {reported}, finished says {dropped}"
    if expect.get("contiguous_sequences"):
        check_contiguous(observed.events, after, "stream")
    if expect.get("same_events_as_last_execution"):
        assert state.last_execution, "no earlier execution to compare with"
        check_same_events(observed.events, state.last_events, after, "stream")
    if expect.get("attach_matches_stream"):
        assert observed.attached, "the attached stream had no events"
        check_contiguous(observed.attached, observed.attached_after, "attached stream")
        check_same_events(observed.attached, observed.events, observed.attached_after, "attached stream")
