package dev.codemode.client;

import com.google.protobuf.Any;
import com.google.protobuf.InvalidProtocolBufferException;
import com.google.rpc.BadRequest;
import com.google.rpc.ErrorInfo;
import com.google.rpc.QuotaFailure;
import com.google.rpc.RetryInfo;
import dev.codemode.v1.ErrorReason;
import io.grpc.Status;
import io.grpc.StatusRuntimeException;
import io.grpc.protobuf.StatusProto;
import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.Optional;

/**
 * A failed call. Branch on {@link #errorReason()} (the generated {@code dev.codemode.v1.ErrorReason}
 * enum) or {@link #reason()} (its value name without the {@code ERROR_REASON_} prefix, e.g. {@code
 * "SESSION_NOT_FOUND"}) or {@link #code()}, never on the message, which is for humans. The
 * standard google.rpc details the server attaches are decoded too: {@link #retryDelay()}
 * (RetryInfo) says when a retry can help, {@link #fieldViolations()} (BadRequest) which request
 * fields were wrong, {@link #quotaViolations()} (QuotaFailure) which quota ran out. Unchecked,
 * like grpc-java's own {@link StatusRuntimeException}, which it keeps as its cause.
 *
 * <p>{@link #session()} is set when no call failed but a session settled badly ({@code
 * createSession}, {@code deps().add} and {@code deps().sync} wait for it): a FAILED session (reason
 * SANDBOX_START_FAILED, or the failed start-up install's, message its state_message) or a failed
 * install (reason DEPS_INSTALL_FAILED, message the install's error_message).
 */
public final class CodemodeException extends RuntimeException {
  /** The google.rpc.ErrorInfo domain of every codemode error. */
  public static final String ERROR_DOMAIN = "codemode.dev";

  private static final String REASON_PREFIX = "ERROR_REASON_";

  private final Status.Code code;
  private final String reason;
  private final Map<String, String> metadata;
  private final Duration retryDelay;
  private final List<BadRequest.FieldViolation> fieldViolations;
  private final List<QuotaFailure.Violation> quotaViolations;
  private final dev.codemode.v1.Session session;

  private CodemodeException(StatusRuntimeException cause, Details details) {
    this(cause, details, null);
  }

  private CodemodeException(StatusRuntimeException cause, Details details, dev.codemode.v1.Session session) {
    super(describe(cause.getStatus(), details.reason), cause);
    this.code = cause.getStatus().getCode();
    this.reason = details.reason;
    this.metadata = Map.copyOf(details.metadata);
    this.retryDelay = details.retryDelay;
    this.fieldViolations = List.copyOf(details.fieldViolations);
    this.quotaViolations = List.copyOf(details.quotaViolations);
    this.session = session;
  }

  /** Wraps a gRPC failure, decoding the codemode ErrorInfo and the standard details present. */
  public static CodemodeException from(StatusRuntimeException cause) {
    Details details = new Details();
    com.google.rpc.Status status = StatusProto.fromThrowable(cause);
    if (status != null) {
      for (Any detail : status.getDetailsList()) {
        try {
          details.add(detail);
        } catch (InvalidProtocolBufferException e) {
          // A malformed detail is no reason to hide the status itself.
        }
      }
    }
    return new CodemodeException(cause, details);
  }

  /**
   * The exception of a session that settled badly: the shape of a server's error (code, reason,
   * metadata "session"), so callers branch on it alike.
   */
  static CodemodeException settled(
      Status.Code code, String reason, String message, dev.codemode.v1.Session session) {
    Details details = new Details();
    details.reason = reason;
    details.metadata = Map.of("session", session.getName());
    return new CodemodeException(
        Status.fromCode(code).withDescription(message).asRuntimeException(), details, session);
  }

  /** The session as WaitSession last returned it, for errors of a settled session; else empty. */
  public Optional<dev.codemode.v1.Session> session() {
    return Optional.ofNullable(session);
  }

  /** The gRPC status code. */
  public Status.Code code() {
    return code;
  }

  /** The ErrorInfo reason, or "" when the server sent none. */
  public String reason() {
    return reason;
  }

  /**
   * The reason as the generated enum: {@code ERROR_REASON_UNSPECIFIED} when the server sent none,
   * {@code UNRECOGNIZED} for a reason this client's protos do not know yet.
   */
  public ErrorReason errorReason() {
    if (reason.isEmpty()) {
      return ErrorReason.ERROR_REASON_UNSPECIFIED;
    }
    try {
      return ErrorReason.valueOf(REASON_PREFIX + reason);
    } catch (IllegalArgumentException e) {
      return ErrorReason.UNRECOGNIZED;
    }
  }

  /** The ErrorInfo metadata (e.g. "field" for INVALID_ARGUMENT). */
  public Map<String, String> metadata() {
    return metadata;
  }

  /** How long to wait before retrying; empty when the server sent no RetryInfo. */
  public Optional<Duration> retryDelay() {
    return Optional.ofNullable(retryDelay);
  }

  /** The request fields the server rejected (google.rpc.BadRequest), in its order. */
  public List<BadRequest.FieldViolation> fieldViolations() {
    return fieldViolations;
  }

  /** The quotas that ran out (google.rpc.QuotaFailure). */
  public List<QuotaFailure.Violation> quotaViolations() {
    return quotaViolations;
  }

  /** The underlying gRPC status. */
  public Status status() {
    return ((StatusRuntimeException) getCause()).getStatus();
  }

  private static String describe(Status status, String reason) {
    String why = reason.isEmpty() ? "" : " (" + reason + ")";
    return "codemode: " + status.getCode() + why + ": " + status.getDescription();
  }

  /** What the details of one status say, gathered before the exception is built. */
  private static final class Details {
    String reason = "";
    Map<String, String> metadata = Map.of();
    Duration retryDelay;
    final List<BadRequest.FieldViolation> fieldViolations = new ArrayList<>();
    final List<QuotaFailure.Violation> quotaViolations = new ArrayList<>();

    void add(Any detail) throws InvalidProtocolBufferException {
      if (detail.is(ErrorInfo.class)) {
        ErrorInfo info = detail.unpack(ErrorInfo.class);
        // Only ours: a proxy's reason must not be mistaken for a codemode one.
        if (ERROR_DOMAIN.equals(info.getDomain()) && reason.isEmpty()) {
          String name = info.getReason();
          reason = name.startsWith(REASON_PREFIX) ? name.substring(REASON_PREFIX.length()) : name;
          metadata = info.getMetadataMap();
        }
      } else if (detail.is(RetryInfo.class)) {
        com.google.protobuf.Duration delay = detail.unpack(RetryInfo.class).getRetryDelay();
        retryDelay = Duration.ofSeconds(delay.getSeconds(), delay.getNanos());
      } else if (detail.is(BadRequest.class)) {
        fieldViolations.addAll(detail.unpack(BadRequest.class).getFieldViolationsList());
      } else if (detail.is(QuotaFailure.class)) {
        quotaViolations.addAll(detail.unpack(QuotaFailure.class).getViolationsList());
      }
    }
  }
}
