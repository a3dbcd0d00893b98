"""Runs conformance/cases.json against a server with the Python client (`codemode`).

The semantics of every field are defined in conformance/README.md; the Go,
TypeScript and Java runners implement the same rules, so keep them in step.
"""

from __future__ import annotations

import json
import os
import secrets
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import codemode
from codemode.v1 import session_pb2

CASES_PATH = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "cases.json")
RETRY_WHILE_BUSY_SECONDS = 30.0


class CaseSkipped(Exception):
    """The server lacks a feature the case `requires` (it answered UNIMPLEMENTED)."""


def load_cases(language: str = "py") -> list[dict[str, Any]]:
    """Cases with `${uid}` replaced by an id unique to this run and language."""
    uid = language + secrets.token_hex(4)
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
    finished_at: float | None = None
    call_error: codemode.CodemodeError | None = None
    cancelled_by_client: bool = False

    def text(self, stream: str) -> str:
        return b"".join(o.data for o in self.outputs if o.stream == stream).decode("utf-8", "replace")


def tls_from_env(env: Mapping[str, str]) -> codemode.TLSConfig | None:
    """mTLS settings when the harness started the server with --mtls, else plaintext."""
    if not env.get("CODEMODE_CONFORMANCE_CA"):
        return None
    return codemode.TLSConfig(
        root_certificates=env["CODEMODE_CONFORMANCE_CA"],
        client_certificate=env["CODEMODE_CONFORMANCE_CLIENT_CERT"],
        client_key=env["CODEMODE_CONFORMANCE_CLIENT_KEY"],
    )


class Runner:
    def __init__(self, target: str, token: str, tls: codemode.TLSConfig | None = None) -> None:
        self.clients = {
            "token": codemode.Client(target, token=token, tls=tls),
            "none": codemode.Client(target, tls=tls),
            "wrong": codemode.Client(target, token=token + "-wrong", tls=tls),
        }
        self.client = self.clients["token"]

    def close(self) -> None:
        for client in self.clients.values():
            client.close()

    def run_case(self, case: dict[str, Any]) -> None:
        if case.get("requires") == "skills":
            self._require_skills()
        session = None
        if any("execute" in step and "session" not in step["execute"] for step in case["steps"]):
            config = case.get("session") or None
            session = self.client.create_session(config={"outputBudgetBytes": config["output_budget_bytes"]} if config else None)
        try:
            for index, step in enumerate(case["steps"]):
                try:
                    self._run_step(step, session)
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
            self.client.skills.search("probe", limit=1)
        except codemode.CodemodeError as error:
            if error.code.name == "UNIMPLEMENTED":
                raise CaseSkipped("the server does not implement SkillStoreService") from error
            raise

    def _run_step(self, step: dict[str, Any], session: codemode.Session | None) -> None:
        expect = step.get("expect", {})
        if "execute" in step:
            observed = self._execute(step["execute"], session)
            check_execute(observed, expect)
            return
        if "close_session" in step:
            assert session is not None
            session.__exit__(None, None, None)  # what `with client.create_session() as s:` runs
            return
        skills = self.client.skills
        try:
            if "create_skill" in step:
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
                names = [hit.skill.name for hit in skills.search(step["search_skills"]["query"])]
                if "contains_name" in expect:
                    assert expect["contains_name"] in names, f"{expect['contains_name']} not in search results {names}"
            elif "delete_skill" in step:
                skills.delete(step["delete_skill"]["id"])
            else:
                raise AssertionError(f"unknown step {step}")
        except codemode.CodemodeError as error:
            check_call_error(error, expect)
            return
        assert "error_status" not in expect, f"expected {expect['error_status']}, the call succeeded"

    def _execute(self, spec: dict[str, Any], session: codemode.Session | None) -> Observed:
        client = self.clients[spec.get("auth", "token")]
        if "session" in spec:
            handle = codemode.Session(client, session_pb2.Session(name=spec["session"]))
        else:
            assert session is not None
            handle = codemode.Session(client, session.info)
        deadline = time.monotonic() + RETRY_WHILE_BUSY_SECONDS
        while True:
            observed = self._execute_once(handle, spec)
            busy = observed.call_error is not None and observed.call_error.reason == "SESSION_BUSY"
            if not (busy and spec.get("retry_while_busy") and time.monotonic() < deadline):
                return observed
            time.sleep(0.1)

    @staticmethod
    def _execute_once(session: codemode.Session, spec: dict[str, Any]) -> Observed:
        observed = Observed()
        timeout = spec.get("execution_timeout_seconds")
        try:
            deadline = spec.get("call_deadline_seconds")
            with session.stream(spec["code"], timeout=timeout, deadline=deadline) as execution:
                for event in execution:
                    now = time.monotonic()
                    if isinstance(event, codemode.Output):
                        observed.outputs.append(event)
                        if observed.first_output_at is None:
                            observed.first_output_at = now
                        if spec.get("cancel_after_first_output"):
                            observed.cancelled_by_client = True
                            execution.cancel()
                            break
                    elif isinstance(event, codemode.Result):
                        observed.result = event
                    elif isinstance(event, codemode.Error):
                        observed.error = event
                    elif isinstance(event, codemode.Finished):
                        observed.finished, observed.finished_at = event, now
        except codemode.CodemodeError as error:
            observed.call_error = error
        return observed


def check_call_error(error: codemode.CodemodeError, expect: dict[str, Any]) -> None:
    wanted = expect.get("error_status")
    assert wanted is not None, f"unexpected call failure: {error}"
    assert error.code.name == wanted["code"], f"status {error.code.name}, want {wanted['code']} ({error})"
    if "reason" in wanted:
        assert (error.reason or "") == wanted["reason"], f"reason {error.reason!r}, want {wanted['reason']!r}"


def check_skill(skill: Any, expect: dict[str, Any]) -> None:
    assert "error_status" not in expect, f"expected {expect['error_status']}, the call succeeded"
    if "name" in expect:
        assert skill.name == expect["name"], f"skill name {skill.name!r}, want {expect['name']!r}"
    if "source_contains" in expect:
        assert expect["source_contains"] in skill.source, f"source {skill.source!r} lacks {expect['source_contains']!r}"


def merged_streams(outputs: list[codemode.Output]) -> Iterator[str]:
    previous = None
    for output in outputs:
        if output.stream != previous:
            yield output.stream
            previous = output.stream


def check_execute(observed: Observed, expect: dict[str, Any]) -> None:
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
