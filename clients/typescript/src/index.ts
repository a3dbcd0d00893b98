export { CodemodeClient, type CallOptions, type ConnectOptions, type TlsOptions } from "./client.js";
export { Session, type RunOptions, type RunResult, ExecutionStatus, OutputStream } from "./session.js";
export { Skills, skillName } from "./skills.js";
export { Artifacts, ArtifactDownload, artifactName, ARTIFACT_CHUNK_BYTES, type ArtifactData, type UploadOptions } from "./artifacts.js";
export { Dependencies } from "./deps.js";
export type { WaitOptions } from "./wait.js";
export { CodemodeError, ERROR_DOMAIN, type GrpcCodeName } from "./errors.js";
export { Reason, type ReasonName } from "./reasons.js";
export type { ErrorInfo, FieldViolation, QuotaViolation } from "./status-details.js";
// The generated messages and services, for anything the wrapper leaves out. The
// generated `Session` message is shadowed by the Session class above; it is
// exported as `SessionResource` (and `Session.info` has that type).
export type { Session as SessionResource } from "./gen/codemode/v1/session_pb.js";
export * from "./gen/codemode/v1/execute_pb.js";
export * from "./gen/codemode/v1/session_pb.js";
export * from "./gen/codemode/v1/skill_pb.js";
export * from "./gen/codemode/v1/artifact_pb.js";
export * from "./gen/codemode/v1/dependency_pb.js";
export * from "./gen/codemode/v1/error_reason_pb.js";
