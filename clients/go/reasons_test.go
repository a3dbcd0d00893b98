package codemode

import (
	"strings"
	"testing"

	codemodev1 "github.com/codemode-dev/codemode/clients/go/gen/codemode/v1"
)

// reasonConstants lists every Reason* constant; the test below fails when
// the generated ErrorReason enum gains, loses or renames a value, so the
// constants cannot drift from the protos.
var reasonConstants = []string{
	ReasonInvalidArgument, ReasonInvalidSessionName, ReasonSessionNotFound, ReasonSessionBusy,
	ReasonSessionNotReady, ReasonSessionLimitReached, ReasonCodeTooLarge, ReasonEmptyCode,
	ReasonSandboxStartFailed, ReasonSandboxUnavailable, ReasonUnauthenticated, ReasonPermissionDenied,
	ReasonDuplicateRequest, ReasonServerShuttingDown, ReasonSessionAlreadyExists, ReasonLimitNotEnforceable,
	ReasonQuotaExceeded, ReasonServerOverloaded, ReasonExecutionNotFound,
	ReasonSkillNotFound, ReasonSkillAlreadyExists, ReasonSkillInvalid, ReasonEtagMismatch,
	ReasonArtifactNotFound, ReasonArtifactTooLarge, ReasonArtifactInvalid, ReasonStorageUnavailable,
	ReasonEventsExpired, ReasonSessionElsewhere,
	ReasonRuntimeDepsDisabled, ReasonInvalidPackageSpec, ReasonDepsInstallFailed, ReasonInternal,
	ReasonCallCancelled, ReasonDeadlineExceeded,
}

func TestReasonConstantsMatchTheGeneratedEnum(t *testing.T) {
	constants := map[string]bool{}
	for _, reason := range reasonConstants {
		if _, ok := codemodev1.ErrorReason_value["ERROR_REASON_"+reason]; !ok {
			t.Errorf("constant %q is not a codemode.v1.ErrorReason value", reason)
		}
		constants[reason] = true
	}
	for name := range codemodev1.ErrorReason_value {
		reason := strings.TrimPrefix(name, "ERROR_REASON_")
		if reason != "UNSPECIFIED" && !constants[reason] {
			t.Errorf("codemode.v1.ErrorReason %s has no Reason constant in reasons.go", name)
		}
	}
}
