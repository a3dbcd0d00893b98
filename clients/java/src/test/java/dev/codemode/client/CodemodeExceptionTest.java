package dev.codemode.client;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import com.google.protobuf.Any;
import com.google.rpc.BadRequest;
import com.google.rpc.Code;
import com.google.rpc.ErrorInfo;
import com.google.rpc.QuotaFailure;
import com.google.rpc.RetryInfo;
import dev.codemode.v1.ErrorReason;
import io.grpc.Status;
import io.grpc.protobuf.StatusProto;
import java.time.Duration;
import java.util.List;
import java.util.Optional;
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

  /** The details the server attaches after its ErrorInfo (server/errors.py: with_details). */
  @Test
  void decodesRetryInfoBadRequestAndQuotaFailure() {
    com.google.rpc.Status status =
        com.google.rpc.Status.newBuilder()
            .setCode(Code.RESOURCE_EXHAUSTED_VALUE)
            .setMessage("over quota")
            .addDetails(
                Any.pack(
                    ErrorInfo.newBuilder()
                        .setDomain("codemode.dev")
                        .setReason("ERROR_REASON_SESSION_LIMIT_REACHED")
                        .build()))
            .addDetails(
                Any.pack(
                    BadRequest.newBuilder()
                        .addFieldViolations(
                            BadRequest.FieldViolation.newBuilder()
                                .setField("session.config.memory_limit_bytes")
                                .setDescription("at most 4294967296"))
                        .addFieldViolations(
                            BadRequest.FieldViolation.newBuilder()
                                .setField("session.labels")
                                .setDescription("at most 64 labels"))
                        .build()))
            .addDetails(
                Any.pack(
                    QuotaFailure.newBuilder()
                        .addViolations(
                            QuotaFailure.Violation.newBuilder()
                                .setSubject("tenant:alice")
                                .setDescription("live sessions"))
                        .build()))
            .addDetails(
                Any.pack(
                    RetryInfo.newBuilder()
                        .setRetryDelay(com.google.protobuf.Duration.newBuilder().setSeconds(1).setNanos(500_000_000))
                        .build()))
            .build();
    CodemodeException e = CodemodeException.from(StatusProto.toStatusRuntimeException(status));
    assertEquals("SESSION_LIMIT_REACHED", e.reason(), "the ERROR_REASON_ prefix is stripped");
    assertEquals(ErrorReason.ERROR_REASON_SESSION_LIMIT_REACHED, e.errorReason());
    assertEquals(Optional.of(Duration.ofMillis(1500)), e.retryDelay());
    assertEquals(
        List.of("session.config.memory_limit_bytes", "session.labels"),
        e.fieldViolations().stream().map(BadRequest.FieldViolation::getField).toList());
    assertEquals("at most 64 labels", e.fieldViolations().get(1).getDescription());
    assertEquals("tenant:alice", e.quotaViolations().get(0).getSubject());
  }

  @Test
  void errorReasonOfAnUnknownOrMissingReason() {
    assertEquals(ErrorReason.UNRECOGNIZED, withInfo("codemode.dev", "QUOTA_EXCEEDED_SOMEDAY").errorReason());
    assertEquals(ErrorReason.ERROR_REASON_SESSION_NOT_FOUND, withInfo("codemode.dev", "SESSION_NOT_FOUND").errorReason());
    assertEquals(ErrorReason.ERROR_REASON_UNSPECIFIED, withInfo("example.com", "OTHER").errorReason());
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
    assertEquals(Optional.empty(), e.retryDelay());
    assertTrue(e.fieldViolations().isEmpty() && e.quotaViolations().isEmpty());
  }
}
