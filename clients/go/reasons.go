package codemode

// The reasons codemode puts in google.rpc.ErrorInfo.reason: the
// codemode.v1.ErrorReason value names without the ERROR_REASON_ prefix.
// Compare them with Reason(err) or Error.Reason. reasons_test.go keeps this
// list in step with the generated enum.
const (
	// A request field is malformed (see the BadRequest field violations, Error.FieldViolations).
	ReasonInvalidArgument = "INVALID_ARGUMENT"
	// The session name is not of the form "sessions/{id}".
	ReasonInvalidSessionName = "INVALID_SESSION_NAME"
	// No live session has that name (never existed, deleted or expired).
	ReasonSessionNotFound = "SESSION_NOT_FOUND"
	// Another Execute is running on the session.
	ReasonSessionBusy = "SESSION_BUSY"
	// The session's sandbox failed or is closed; ResetSession or a new session is needed.
	ReasonSessionNotReady = "SESSION_NOT_READY"
	// The server's cap on live sessions is reached.
	ReasonSessionLimitReached = "SESSION_LIMIT_REACHED"
	// The code is larger than the server's limit.
	ReasonCodeTooLarge = "CODE_TOO_LARGE"
	// Unused: empty code runs as a no-op (kept so the number is not reused).
	//
	// Deprecated: the server never sends it.
	ReasonEmptyCode = "EMPTY_CODE"
	// The sandbox could not be started.
	ReasonSandboxStartFailed = "SANDBOX_START_FAILED"
	// The sandbox agent cannot be reached right now.
	ReasonSandboxUnavailable = "SANDBOX_UNAVAILABLE"
	// Missing or invalid credentials.
	ReasonUnauthenticated = "UNAUTHENTICATED"
	// The caller may not act on that resource (e.g. another tenant's).
	ReasonPermissionDenied = "PERMISSION_DENIED"
	// A request with this request_id was already handled.
	ReasonDuplicateRequest = "DUPLICATE_REQUEST"
	// The server is shutting down and accepts no new work.
	ReasonServerShuttingDown = "SERVER_SHUTTING_DOWN"
	// A session with the requested session_id already exists.
	ReasonSessionAlreadyExists = "SESSION_ALREADY_EXISTS"
	// A requested setting (metadata "field") cannot be enforced by the chosen sandbox kind on this server (FAILED_PRECONDITION).
	ReasonLimitNotEnforceable = "LIMIT_NOT_ENFORCEABLE"
	// A per-tenant quota is used up (QuotaFailure says which, RetryInfo when to try again).
	ReasonQuotaExceeded = "QUOTA_EXCEEDED"
	// The server has as many calls in flight as it accepts; retry after the RetryInfo delay.
	ReasonServerOverloaded = "SERVER_OVERLOADED"
	// No execution has that name, or its record is past retention.
	ReasonExecutionNotFound = "EXECUTION_NOT_FOUND"
	// No skill has that name in the tenant.
	ReasonSkillNotFound = "SKILL_NOT_FOUND"
	// The skill already exists.
	ReasonSkillAlreadyExists = "SKILL_ALREADY_EXISTS"
	// The skill's name or source failed validation.
	ReasonSkillInvalid = "SKILL_INVALID"
	// The etag does not match the stored version.
	ReasonEtagMismatch = "ETAG_MISMATCH"
	// No artifact has that name in the tenant.
	ReasonArtifactNotFound = "ARTIFACT_NOT_FOUND"
	// The artifact is larger than the server's limit.
	ReasonArtifactTooLarge = "ARTIFACT_TOO_LARGE"
	// The artifact name is invalid (path traversal, reserved name, ...).
	ReasonArtifactInvalid = "ARTIFACT_INVALID"
	// The storage backend (Redis, files) is unavailable.
	ReasonStorageUnavailable = "STORAGE_UNAVAILABLE"
	// The requested events are no longer kept (OUT_OF_RANGE); metadata "firstAvailableSequence" is the first that is.
	ReasonEventsExpired = "EVENTS_EXPIRED"
	// The session's sandbox is held by another server instance that this one cannot serve it through; metadata "instance" names the owner.
	ReasonSessionElsewhere = "SESSION_ELSEWHERE"
	// Runtime dependency changes are disabled for the session.
	ReasonRuntimeDepsDisabled = "RUNTIME_DEPS_DISABLED"
	// A package specification was rejected.
	ReasonInvalidPackageSpec = "INVALID_PACKAGE_SPEC"
	// A valid package could not be installed from the configured index or wheelhouse (missing package or version, no package source configured).
	ReasonDepsInstallFailed = "DEPS_INSTALL_FAILED"
	// An unexpected server error.
	ReasonInternal = "INTERNAL"
	// The caller cancelled the call (status CANCELLED).
	ReasonCallCancelled = "CALL_CANCELLED"
	// The call's deadline passed (status DEADLINE_EXCEEDED).
	ReasonDeadlineExceeded = "DEADLINE_EXCEEDED"
)
