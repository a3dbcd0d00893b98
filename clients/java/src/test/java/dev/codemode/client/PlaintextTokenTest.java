package dev.codemode.client;

import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.util.List;
import org.junit.jupiter.api.Test;

/**
 * The plaintext token rule, without a server: the same targets as the Python client's
 * is_local_target and the conformance case token_is_never_sent_in_plaintext_to_a_remote_host.
 */
class PlaintextTokenTest {
  @Test
  void refusesATokenInPlaintextToARemoteHost() {
    for (String target : List.of("codemode.example:50051", "10.1.2.3:50051", "[2001:db8::1]:443")) {
      IllegalArgumentException refused =
          assertThrows(
              IllegalArgumentException.class,
              () -> CodemodeClient.builder(target).plaintext().token("s3cret").build(),
              target);
      assertTrue(refused.getMessage().contains("refusing to send the API token in plaintext to"), refused.getMessage());
      // Allowed with the explicit override, without a token, or over TLS.
      CodemodeClient.builder(target).plaintext().token("s3cret").allowInsecureToken().build().close();
      CodemodeClient.builder(target).plaintext().build().close();
      CodemodeClient.builder(target).token("s3cret").build().close();
    }
  }

  @Test
  void allowsATokenInPlaintextToLoopback() {
    for (String target : List.of("127.0.0.1:50051", "127.8.9.10:50051", "localhost:50051", "[::1]:50051")) {
      CodemodeClient.builder(target).plaintext().token("s3cret").build().close();
    }
    for (String target : List.of("unix:/tmp/codemode.sock", "unix-abstract:codemode")) {
      assertTrue(PlaintextTokens.isLocalTarget(target), target);
    }
  }
}
