import { Code, ConnectError } from "@connectrpc/connect";
import type { Session as SessionInfo } from "./gen/codemode/v1/session_pb.js";
import {
  BAD_REQUEST_TYPE,
  decodeErrorInfo,
  decodeFieldViolations,
  decodeQuotaViolations,
  decodeRetryDelayMs,
  ERROR_INFO_TYPE,
  QUOTA_FAILURE_TYPE,
  RETRY_INFO_TYPE,
  type ErrorInfo,
  type FieldViolation,
  type QuotaViolation,
} from "./status-details.js";

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
 * A failed call. Branch on `reason` (compare with the `Reason` constants,
 * e.g. `Reason.SESSION_NOT_FOUND`) or `code`, never on `message`, which is
 * for humans. The standard google.rpc details the server attaches are
 * decoded too: `retryDelayMs` (RetryInfo) says when a retry can help,
 * `fieldViolations` (BadRequest) which request fields were wrong, and
 * `quotaViolations` (QuotaFailure) which quota ran out.
 *
 * `session` is set when no call failed but a session settled badly
 * (`createSession`, `deps.add` and `deps.sync` wait for it): a FAILED
 * session (reason SANDBOX_START_FAILED, or the failed start-up install's,
 * message its state_message) or a failed install (reason DEPS_INSTALL_FAILED,
 * message the install's error_message).
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
  /** How long to wait before retrying; undefined when the server sent no RetryInfo. */
  readonly retryDelayMs?: number;
  readonly fieldViolations: FieldViolation[];
  readonly quotaViolations: QuotaViolation[];
  /** The status message without the code prefix connect adds. */
  readonly rawMessage: string;
  /** The session as WaitSession last returned it, for errors of a settled session; else undefined. */
  readonly session?: SessionInfo;

  /** `settled`: the ErrorInfo and session of an error that no server sent (see `sessionError`). */
  constructor(cause: ConnectError, settled?: { info: ErrorInfo; session: SessionInfo }) {
    const details = decodeDetails(cause);
    if (settled) details.info = settled.info;
    const grpcCode = GRPC_CODE_NAMES[cause.code] ?? "UNKNOWN";
    const info = details.info;
    super(`codemode: ${grpcCode}${info ? ` (${info.reason})` : ""}: ${cause.rawMessage}`, { cause });
    this.code = cause.code;
    this.grpcCode = grpcCode;
    this.reason = info?.reason ?? "";
    this.metadata = info?.metadata ?? {};
    if (details.retryDelayMs !== undefined) this.retryDelayMs = details.retryDelayMs;
    this.fieldViolations = details.fieldViolations;
    this.quotaViolations = details.quotaViolations;
    this.rawMessage = cause.rawMessage;
    if (settled) this.session = settled.session;
  }
}

/**
 * The CodemodeError of a session that settled badly: the shape of a server's
 * error (code, reason, metadata "session"), so callers branch on it alike.
 */
export function sessionError(code: Code, reason: string, message: string, session: SessionInfo): CodemodeError {
  return new CodemodeError(new ConnectError(message, code), {
    info: { reason, domain: ERROR_DOMAIN, metadata: { session: session.name } },
    session,
  });
}

interface Details {
  info?: ErrorInfo;
  retryDelayMs?: number;
  fieldViolations: FieldViolation[];
  quotaViolations: QuotaViolation[];
}

function decodeDetails(error: ConnectError): Details {
  const details: Details = { fieldViolations: [], quotaViolations: [] };
  for (const detail of error.details) {
    if (!("type" in detail)) continue;
    try {
      if (detail.type === ERROR_INFO_TYPE && !details.info) {
        const info = decodeErrorInfo(detail.value);
        // Only ours: a proxy's reason must not be mistaken for a codemode one.
        if (info.domain === ERROR_DOMAIN) details.info = { ...info, reason: info.reason.replace(/^ERROR_REASON_/, "") };
      } else if (detail.type === RETRY_INFO_TYPE) {
        details.retryDelayMs = decodeRetryDelayMs(detail.value);
      } else if (detail.type === BAD_REQUEST_TYPE) {
        details.fieldViolations.push(...decodeFieldViolations(detail.value));
      } else if (detail.type === QUOTA_FAILURE_TYPE) {
        details.quotaViolations.push(...decodeQuotaViolations(detail.value));
      }
    } catch {
      // A garbled detail must not hide the status itself.
    }
  }
  return details;
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

/** Runs one call, turning its failure into a CodemodeError. */
export async function call<T>(fn: () => Promise<T>): Promise<T> {
  try {
    return await fn();
  } catch (error) {
    throw toCodemodeError(error);
  }
}
