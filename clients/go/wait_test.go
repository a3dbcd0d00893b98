package codemode

import (
	"errors"
	"testing"

	codemodev1 "github.com/codemode-dev/codemode/clients/go/gen/codemode/v1"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// What a settled session means to the caller: no server needed, the inputs
// are the Session messages WaitSession returns.
func TestSettledErrorNamesTheFailure(t *testing.T) {
	failedInstall := &codemodev1.DependencyInstall{
		State: codemodev1.DependencyInstall_STATE_FAILED, ErrorReason: ReasonDepsInstallFailed, ErrorMessage: "no cm-tiny-missing",
	}
	for _, c := range []struct {
		name           string
		session        *codemodev1.Session
		installStarted bool
		code           codes.Code
		reason         string
		message        string
	}{
		{"ready", &codemodev1.Session{State: codemodev1.Session_STATE_READY}, false, codes.OK, "", ""},
		{"ready after an install", &codemodev1.Session{State: codemodev1.Session_STATE_READY,
			LastInstall: &codemodev1.DependencyInstall{State: codemodev1.DependencyInstall_STATE_SUCCEEDED}}, true, codes.OK, "", ""},
		{"an older failed install is not this call's", &codemodev1.Session{State: codemodev1.Session_STATE_READY, LastInstall: failedInstall}, false, codes.OK, "", ""},
		{"install failed", &codemodev1.Session{State: codemodev1.Session_STATE_READY, LastInstall: failedInstall}, true,
			codes.FailedPrecondition, ReasonDepsInstallFailed, "no cm-tiny-missing"},
		{"start failed", &codemodev1.Session{State: codemodev1.Session_STATE_FAILED, StateMessage: "no docker"}, false,
			codes.Unavailable, ReasonSandboxStartFailed, "no docker"},
		{"start-up deps failed", &codemodev1.Session{State: codemodev1.Session_STATE_FAILED, StateMessage: "deps failed", LastInstall: failedInstall}, false,
			codes.FailedPrecondition, ReasonDepsInstallFailed, "deps failed"},
	} {
		c.session.Name = "sessions/s1"
		err := settledError(c.session, c.installStarted)
		if c.code == codes.OK {
			if err != nil {
				t.Errorf("%s: unexpected %v", c.name, err)
			}
			continue
		}
		var cmErr *Error
		if !errors.As(err, &cmErr) {
			t.Fatalf("%s: not an *Error: %v", c.name, err)
		}
		if cmErr.Code != c.code || cmErr.Reason != c.reason || cmErr.Message != c.message || cmErr.Session != c.session ||
			cmErr.Metadata["session"] != "sessions/s1" {
			t.Errorf("%s: got %+v", c.name, cmErr)
		}
		if status.Code(err) != c.code || Reason(err) != c.reason {
			t.Errorf("%s: the helpers see %v %q", c.name, status.Code(err), Reason(err))
		}
	}
}
