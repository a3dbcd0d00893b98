/** Error mapping without a server: ErrorInfo decoding and ConnectError → CodemodeError. */
import { test } from "node:test";
import assert from "node:assert/strict";
import { BinaryWriter } from "@bufbuild/protobuf/wire";
import { Code, ConnectError } from "@connectrpc/connect";
import { CodemodeError } from "../src/index.js";
import { decodeErrorInfo } from "../src/error-info.js";
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
