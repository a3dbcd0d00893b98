package dev.codemode.client;

import com.google.protobuf.Any;
import com.google.protobuf.InvalidProtocolBufferException;
import com.google.rpc.ErrorInfo;
import io.grpc.Status;
import io.grpc.StatusRuntimeException;
import io.grpc.protobuf.StatusProto;
import java.util.Map;

/**
 * A failed call. Branch on {@link #reason()} (a codemode.v1.ErrorReason value name without the
 * {@code ERROR_REASON_} prefix, e.g. {@code "SESSION_NOT_FOUND"}) or {@link #code()}, never on the
 * message, which is for humans. Unchecked, like grpc-java's own {@link StatusRuntimeException},
 * which it keeps as its cause.
 */
public final class CodemodeException extends RuntimeException {
  /** The google.rpc.ErrorInfo domain of every codemode error. */
  public static final String ERROR_DOMAIN = "codemode.dev";

  private final Status.Code code;
  private final String reason;
  private final Map<String, String> metadata;

  private CodemodeException(StatusRuntimeException cause, String reason, Map<String, String> metadata) {
    super(describe(cause.getStatus(), reason), cause);
    this.code = cause.getStatus().getCode();
    this.reason = reason;
    this.metadata = metadata;
  }

  /** Wraps a gRPC failure, extracting the codemode ErrorInfo when present. */
  public static CodemodeException from(StatusRuntimeException cause) {
    com.google.rpc.Status status = StatusProto.fromThrowable(cause);
    if (status != null) {
      for (Any detail : status.getDetailsList()) {
        if (!detail.is(ErrorInfo.class)) {
          continue;
        }
        try {
          ErrorInfo info = detail.unpack(ErrorInfo.class);
          if (ERROR_DOMAIN.equals(info.getDomain())) {
            return new CodemodeException(cause, info.getReason(), Map.copyOf(info.getMetadataMap()));
          }
        } catch (InvalidProtocolBufferException e) {
          // A malformed detail is no reason to hide the status itself.
        }
      }
    }
    return new CodemodeException(cause, "", Map.of());
  }

  /** The gRPC status code. */
  public Status.Code code() {
    return code;
  }

  /** The ErrorInfo reason, or "" when the server sent none. */
  public String reason() {
    return reason;
  }

  /** The ErrorInfo metadata (e.g. "field" for INVALID_ARGUMENT). */
  public Map<String, String> metadata() {
    return metadata;
  }

  /** The underlying gRPC status. */
  public Status status() {
    return ((StatusRuntimeException) getCause()).getStatus();
  }

  private static String describe(Status status, String reason) {
    String why = reason.isEmpty() ? "" : " (" + reason + ")";
    return "codemode: " + status.getCode() + why + ": " + status.getDescription();
  }
}
