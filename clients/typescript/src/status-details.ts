/**
 * Decodes the google.rpc details codemode attaches to an error status
 * (ErrorInfo first, then BadRequest, QuotaFailure or RetryInfo where they
 * apply) by hand: together they have a handful of fields, and generating the
 * googleapis protos into this package would add a second copy of google.rpc
 * types that other packages may already bring.
 */
import { BinaryReader, WireType } from "@bufbuild/protobuf/wire";

export const ERROR_INFO_TYPE = "google.rpc.ErrorInfo";
export const RETRY_INFO_TYPE = "google.rpc.RetryInfo";
export const BAD_REQUEST_TYPE = "google.rpc.BadRequest";
export const QUOTA_FAILURE_TYPE = "google.rpc.QuotaFailure";

export interface ErrorInfo {
  reason: string;
  domain: string;
  metadata: Record<string, string>;
}

/** One wrong request field, from google.rpc.BadRequest. */
export interface FieldViolation {
  /** Path of the field, e.g. "session.config.memory_limit_bytes". */
  field: string;
  description: string;
}

/** One exhausted quota, from google.rpc.QuotaFailure. */
export interface QuotaViolation {
  /** Who ran out, e.g. "tenant:alice". */
  subject: string;
  description: string;
}

export function decodeErrorInfo(bytes: Uint8Array): ErrorInfo {
  const info: ErrorInfo = { reason: "", domain: "", metadata: {} };
  readFields(bytes, (field, reader) => {
    if (field === 1) info.reason = reader.string();
    else if (field === 2) info.domain = reader.string();
    else if (field === 3) {
      const [key, value] = twoStrings(reader.bytes());
      info.metadata[key] = value;
    } else return false;
    return true;
  });
  return info;
}

/** google.rpc.RetryInfo's retry_delay (a google.protobuf.Duration) in milliseconds. */
export function decodeRetryDelayMs(bytes: Uint8Array): number {
  let ms = 0;
  readFields(bytes, (field, reader) => {
    if (field !== 1) return false;
    readFields(reader.bytes(), (durationField, duration) => {
      if (durationField === 1) ms += Number(duration.int64()) * 1000;
      else if (durationField === 2) ms += duration.int32() / 1e6;
      else return false;
      return true;
    }, WireType.Varint);
    return true;
  });
  return ms;
}

export function decodeFieldViolations(bytes: Uint8Array): FieldViolation[] {
  const violations: FieldViolation[] = [];
  readFields(bytes, (field, reader) => {
    if (field !== 1) return false;
    const [name, description] = twoStrings(reader.bytes());
    violations.push({ field: name, description });
    return true;
  });
  return violations;
}

export function decodeQuotaViolations(bytes: Uint8Array): QuotaViolation[] {
  const violations: QuotaViolation[] = [];
  readFields(bytes, (field, reader) => {
    if (field !== 1) return false;
    const [subject, description] = twoStrings(reader.bytes());
    violations.push({ subject, description });
    return true;
  });
  return violations;
}

/**
 * Calls `read` for each field of the expected wire type (length-delimited
 * unless told otherwise); fields it declines (returns false) or of another
 * wire type are skipped, as protobuf requires of unknown fields.
 */
function readFields(
  bytes: Uint8Array,
  read: (field: number, reader: BinaryReader) => boolean,
  wireType: WireType = WireType.LengthDelimited,
): void {
  const reader = new BinaryReader(bytes);
  while (reader.pos < reader.len) {
    const [field, type] = reader.tag();
    if (type !== wireType || !read(field, reader)) reader.skip(type, field);
  }
}

/** Fields 1 and 2 of a message whose first two fields are strings (map entries, violations). */
function twoStrings(bytes: Uint8Array): [string, string] {
  let first = "";
  let second = "";
  readFields(bytes, (field, reader) => {
    if (field === 1) first = reader.string();
    else if (field === 2) second = reader.string();
    else return false;
    return true;
  });
  return [first, second];
}
