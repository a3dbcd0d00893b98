package dev.codemode.client;

import static org.junit.jupiter.api.Assertions.assertEquals;

import com.google.protobuf.Any;
import com.google.rpc.Code;
import com.google.rpc.ErrorInfo;
import io.grpc.Status;
import io.grpc.protobuf.StatusProto;
import org.junit.jupiter.api.Test;

/** Error mapping without a server: the status and ErrorInfo survive the conversion. */
class CodemodeExceptionTest {
  private static CodemodeException withInfo(String domain, String reason) {
    com.google.rpc.Status status =
        com.google.rpc.Status.newBuilder()
            .setCode(Code.NOT_FOUND_VALUE)
            .setMessage("no such session")
            .addDetails(
                Any.pack(
                    ErrorInfo.newBuilder()
                        .setDomain(domain)
                        .setReason(reason)
                        .putMetadata("field", "session")
                        .build()))
            .build();
    return CodemodeException.from(StatusProto.toStatusRuntimeException(status));
  }

  @Test
  void keepsCodeReasonAndMetadata() {
    CodemodeException e = withInfo("codemode.dev", "SESSION_NOT_FOUND");
    assertEquals(Status.Code.NOT_FOUND, e.code());
    assertEquals("SESSION_NOT_FOUND", e.reason());
    assertEquals("session", e.metadata().get("field"));
    assertEquals("no such session", e.status().getDescription());
  }

  @Test
  void ignoresOtherDomains() {
    assertEquals("", withInfo("example.com", "OTHER").reason());
  }

  @Test
  void worksWithoutDetails() {
    CodemodeException e = CodemodeException.from(Status.UNAVAILABLE.withDescription("down").asRuntimeException());
    assertEquals(Status.Code.UNAVAILABLE, e.code());
    assertEquals("", e.reason());
  }
}
