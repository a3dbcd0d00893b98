import { Code, ConnectError } from "@connectrpc/connect";
import { decodeErrorInfo, ERROR_INFO_TYPE } from "./error-info.js";

/** The google.rpc.ErrorInfo domain of every codemode error. */
export const ERROR_DOMAIN = "codemode.dev";

/** gRPC status names, indexed by code, as every other gRPC client spells them. */
const GRPC_CODE_NAMES = [
  "OK", "CANCELLED", "UNKNOWN", "INVALID_ARGUMENT", "DEADLINE_EXCEEDED", "NOT_FOUND",
  "ALREADY_EXISTS", "PERMISSION_DENIED", "RESOURCE_EXHAUSTED", "FAILED_PRECONDITION",
  "ABORTED", "OUT_OF_RANGE", "UNIMPLEMENTED", "INTERNAL", "UNAVAILABLE", "DATA_LOSS",
  "UNAUTHENTICATED",
] as const;

export type GrpcCodeName = (typeof GRPC_CODE_NAMES)[number];

/**
 * A failed call. Branch on `reason` (a codemode.v1.ErrorReason value name
 * without the ERROR_REASON_ prefix, e.g. "SESSION_NOT_FOUND") or `code`,
 * never on `message`, which is for humans.
 */
export class CodemodeError extends Error {
  override readonly name = "CodemodeError";
  /** The gRPC status code (same numbers as connect's `Code`). */
  readonly code: Code;
  /** The gRPC status name, e.g. "NOT_FOUND". */
  readonly grpcCode: GrpcCodeName;
  /** ErrorInfo reason, or "" when the server sent none. */
  readonly reason: string;
  readonly metadata: Record<string, string>;
  /** The status message without the code prefix connect adds. */
  readonly rawMessage: string;

  constructor(cause: ConnectError) {
    const info = findErrorInfo(cause);
    const grpcCode = GRPC_CODE_NAMES[cause.code] ?? "UNKNOWN";
    super(`codemode: ${grpcCode}${info ? ` (${info.reason})` : ""}: ${cause.rawMessage}`, { cause });
    this.code = cause.code;
    this.grpcCode = grpcCode;
    this.reason = info?.reason ?? "";
    this.metadata = info?.metadata ?? {};
    this.rawMessage = cause.rawMessage;
  }
}

function findErrorInfo(error: ConnectError) {
  for (const detail of error.details) {
    if ("type" in detail && detail.type === ERROR_INFO_TYPE) {
      const info = decodeErrorInfo(detail.value);
      if (info.domain === ERROR_DOMAIN) return info;
    }
  }
  return undefined;
}

/**
 * Converts whatever a connect call threw into a CodemodeError. Aborts by
 * the caller's AbortSignal become CANCELLED errors, as in other gRPC clients.
 */
export function toCodemodeError(error: unknown): unknown {
  if (error instanceof CodemodeError) return error;
  const connectError = ConnectError.from(error);
  if (connectError.code === Code.Unknown && !(error instanceof ConnectError)) return error;
  return new CodemodeError(connectError);
}
