/** Error mapping without a server: status details decoding and ConnectError → CodemodeError. */
import { test } from "node:test";
import assert from "node:assert/strict";
import { BinaryWriter } from "@bufbuild/protobuf/wire";
import { Code, ConnectError } from "@connectrpc/connect";
import { CodemodeError, ErrorReason, Reason } from "../src/index.js";
import { decodeErrorInfo } from "../src/status-details.js";
import { toCodemodeError } from "../src/errors.js";

function errorInfoBytes(reason: string, domain: string, metadata: Record<string, string>): Uint8Array {
  const writer = new BinaryWriter();
  writer.tag(1, 2).string(reason);
  writer.tag(2, 2).string(domain);
  for (const [key, value] of Object.entries(metadata)) {
    writer.tag(3, 2).fork().tag(1, 2).string(key).tag(2, 2).string(value).join();
  }
  return writer.finish();
}

test("decodes google.rpc.ErrorInfo", () => {
  const info = decodeErrorInfo(errorInfoBytes("SESSION_NOT_FOUND", "codemode.dev", { field: "session", b: "2" }));
  assert.deepEqual(info, { reason: "SESSION_NOT_FOUND", domain: "codemode.dev", metadata: { field: "session", b: "2" } });
});

test("maps a ConnectError with codemode ErrorInfo", () => {
  const cause = new ConnectError("no such session", Code.NotFound);
  cause.details.push({ type: "google.rpc.ErrorInfo", value: errorInfoBytes("SESSION_NOT_FOUND", "codemode.dev", {}) });
  const error = toCodemodeError(cause);
  assert.ok(error instanceof CodemodeError);
  assert.equal(error.grpcCode, "NOT_FOUND");
  assert.equal(error.code, Code.NotFound);
  assert.equal(error.reason, "SESSION_NOT_FOUND");
  assert.equal(error.rawMessage, "no such session");
});

test("ignores ErrorInfo of other domains and maps aborts to CANCELLED", () => {
  const cause = new ConnectError("x", Code.Unavailable);
  cause.details.push({ type: "google.rpc.ErrorInfo", value: errorInfoBytes("OTHER", "example.com", {}) });
  assert.equal((toCodemodeError(cause) as CodemodeError).reason, "");
  const aborted = toCodemodeError(new DOMException("aborted", "AbortError")) as CodemodeError;
  assert.equal(aborted.grpcCode, "CANCELLED");
});

test("passes unrelated errors through", () => {
  const plain = new TypeError("bug");
  assert.equal(toCodemodeError(plain), plain);
});

/** Messages whose fields 1 and 2 are strings: BadRequest.FieldViolation, QuotaFailure.Violation. */
function repeatedPairs(pairs: [string, string][]): Uint8Array {
  const writer = new BinaryWriter();
  for (const [first, second] of pairs) writer.tag(1, 2).fork().tag(1, 2).string(first).tag(2, 2).string(second).join();
  return writer.finish();
}

function retryInfoBytes(seconds: number, nanos: number): Uint8Array {
  return new BinaryWriter().tag(1, 2).fork().tag(1, 0).int64(seconds).tag(2, 0).int32(nanos).join().finish();
}

test("decodes RetryInfo, BadRequest and QuotaFailure after the ErrorInfo", () => {
  const cause = new ConnectError("over quota", Code.ResourceExhausted);
  cause.details.push(
    { type: "google.rpc.ErrorInfo", value: errorInfoBytes("ERROR_REASON_SESSION_LIMIT_REACHED", "codemode.dev", {}) },
    {
      type: "google.rpc.BadRequest",
      value: repeatedPairs([["session.config.memory_limit_bytes", "at most 4294967296"], ["session.labels", "at most 64 labels"]]),
    },
    { type: "google.rpc.QuotaFailure", value: repeatedPairs([["tenant:alice", "live sessions"]]) },
    { type: "google.rpc.RetryInfo", value: retryInfoBytes(1, 500_000_000) },
  );
  const error = toCodemodeError(cause) as CodemodeError;
  assert.equal(error.reason, Reason.SESSION_LIMIT_REACHED, "the ERROR_REASON_ prefix is stripped");
  assert.equal(error.retryDelayMs, 1500);
  assert.deepEqual(error.fieldViolations, [
    { field: "session.config.memory_limit_bytes", description: "at most 4294967296" },
    { field: "session.labels", description: "at most 64 labels" },
  ]);
  assert.deepEqual(error.quotaViolations, [{ subject: "tenant:alice", description: "live sessions" }]);
});

test("an error without details has no retry delay and no violations", () => {
  const error = toCodemodeError(new ConnectError("down", Code.Unavailable)) as CodemodeError;
  assert.equal(error.retryDelayMs, undefined);
  assert.deepEqual([error.reason, error.fieldViolations, error.quotaViolations], ["", [], []]);
});

test("Reason has one constant per generated ErrorReason value", () => {
  const names = Object.keys(ErrorReason).filter((key) => Number.isNaN(Number(key)) && key !== "UNSPECIFIED");
  assert.deepEqual(Object.keys(Reason).sort(), names.sort());
  assert.equal(Reason.SESSION_BUSY, "SESSION_BUSY");
  assert.equal(Reason.RUNTIME_DEPS_DISABLED, "RUNTIME_DEPS_DISABLED");
});

// What a settled session means to the caller: no server needed, the inputs
// are the Session messages WaitSession returns.
test("settledError names a failed install or a failed session", async () => {
  const { create } = await import("@bufbuild/protobuf");
  const { SessionSchema, Session_State, DependencyInstall_State } = await import("../src/index.js");
  const { settledError } = await import("../src/wait.js");
  const failedInstall = { state: DependencyInstall_State.FAILED, errorReason: "DEPS_INSTALL_FAILED", errorMessage: "no cm-tiny-missing" };
  const session = (init: object) => create(SessionSchema, { name: "sessions/s1", ...init });

  assert.equal(settledError(session({ state: Session_State.READY }), false), undefined);
  assert.equal(settledError(session({ state: Session_State.READY, lastInstall: failedInstall }), false), undefined, "an older install is not this call's");
  const install = settledError(session({ state: Session_State.READY, lastInstall: failedInstall }), true);
  assert.ok(install instanceof CodemodeError);
  assert.deepEqual([install.grpcCode, install.reason, install.rawMessage, install.metadata], ["FAILED_PRECONDITION", "DEPS_INSTALL_FAILED", "no cm-tiny-missing", { session: "sessions/s1" }]);
  assert.equal(install.session?.name, "sessions/s1");
  const start = settledError(session({ state: Session_State.FAILED, stateMessage: "no docker" }), false);
  assert.deepEqual([start?.grpcCode, start?.reason, start?.rawMessage], ["UNAVAILABLE", "SANDBOX_START_FAILED", "no docker"]);
  const startDeps = settledError(session({ state: Session_State.FAILED, stateMessage: "deps failed", lastInstall: failedInstall }), false);
  assert.deepEqual([startDeps?.grpcCode, startDeps?.reason, startDeps?.rawMessage], ["FAILED_PRECONDITION", "DEPS_INSTALL_FAILED", "deps failed"]);
});

test("Reason has the revision's new reasons", () => {
  for (const reason of ["EXECUTION_NOT_FOUND", "EVENTS_EXPIRED", "SESSION_ELSEWHERE", "CALL_CANCELLED", "DEADLINE_EXCEEDED"] as const) {
    assert.equal(Reason[reason], reason);
  }
});
