/** Client-side rules that need no server: the plaintext token rule and close(). */
import { test } from "node:test";
import assert from "node:assert/strict";
import { CodemodeClient, CodemodeError } from "../src/index.js";

// The same targets as the Python client's is_local_target and the conformance
// case token_is_never_sent_in_plaintext_to_a_remote_host.
test("refuses to send a token in plaintext to a host that is not loopback", () => {
  for (const target of ["codemode.example:50051", "10.1.2.3:50051", "[2001:db8::1]:443"]) {
    assert.throws(
      () => new CodemodeClient(target, { token: "s3cret", tls: false }),
      /refusing to send the API token in plaintext to/,
      target,
    );
    // Allowed with the explicit override, without a token, or over TLS.
    void new CodemodeClient(target, { token: "s3cret", tls: false, allowInsecureToken: true }).close();
    void new CodemodeClient(target, { tls: false }).close();
    void new CodemodeClient(target, { token: "s3cret" }).close();
  }
  for (const target of ["127.0.0.1:50051", "127.8.9.10:50051", "localhost:50051", "[::1]:50051"]) {
    void new CodemodeClient(target, { token: "s3cret", tls: false }).close();
  }
});

test("close() makes every later call fail with CANCELLED, and is idempotent", async () => {
  // Port 1 on loopback: nothing listens, and a closed client must not even try.
  const client = new CodemodeClient("127.0.0.1:1", { tls: false });
  await client.close();
  await client.close();
  await assert.rejects(client.createSession(), (error: unknown) => {
    assert.ok(error instanceof CodemodeError);
    assert.equal(error.grpcCode, "CANCELLED");
    assert.match(error.message, /the client is closed/);
    return true;
  });
  await assert.rejects(client.artifacts().list(), (error: unknown) => error instanceof CodemodeError && error.grpcCode === "CANCELLED");
});
