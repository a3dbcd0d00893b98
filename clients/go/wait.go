package codemode

import (
	"context"
	"time"

	codemodev1 "github.com/codemode-dev/codemode/clients/go/gen/codemode/v1"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/types/known/durationpb"
)

// waitSessionTimeout is what one WaitSession call asks for: the server's
// default (it caps at 60 s so that no proxy's idle timeout cuts the call);
// a longer wait is several calls.
const waitSessionTimeout = 30 * time.Second

// WaitOption configures the calls that wait for a session to settle
// (CreateSession, Dependencies.Add, Dependencies.Sync).
type WaitOption func(*waitOptions)

type waitOptions struct {
	noWait bool
}

// NoWait returns as soon as the server accepted the call: the session may
// still be STARTING or INSTALLING. Session.Wait waits for it later.
func NoWait() WaitOption {
	return func(o *waitOptions) { o.noWait = true }
}

func waitWanted(opts []WaitOption) bool {
	o := waitOptions{}
	for _, opt := range opts {
		opt(&o)
	}
	return !o.noWait
}

// transient reports whether the session is still settling: a slow
// operation (start, package install) is running.
func transient(state codemodev1.Session_State) bool {
	return state == codemodev1.Session_STATE_STARTING || state == codemodev1.Session_STATE_INSTALLING
}

// waitSettled calls WaitSession until the session is neither STARTING nor
// INSTALLING, bounded by ctx (its deadline, or its cancellation).
func (c *Client) waitSettled(ctx context.Context, session *codemodev1.Session) (*codemodev1.Session, error) {
	for transient(session.GetState()) {
		timeout := waitSessionTimeout
		if deadline, ok := ctx.Deadline(); ok {
			if remaining := time.Until(deadline); remaining < timeout {
				timeout = remaining
			}
		}
		if timeout <= 0 {
			return session, sessionError(codes.DeadlineExceeded, ReasonDeadlineExceeded,
				"the context's deadline passed while the session was "+session.GetState().String(), session)
		}
		resp, err := c.sessions.WaitSession(ctx, &codemodev1.WaitSessionRequest{Name: session.GetName(), Timeout: durationpb.New(timeout)})
		if err != nil {
			return session, wrapError(err)
		}
		session = resp.GetSession()
	}
	return session, nil
}

// settledError says what went wrong once a session settled, or nil. An
// install this call started that failed is reported first; then a FAILED
// session, with the reason of the failed start-up install when there was one.
func settledError(session *codemodev1.Session, installStarted bool) error {
	install := session.GetLastInstall()
	installFailed := install.GetState() == codemodev1.DependencyInstall_STATE_FAILED
	switch {
	case installStarted && installFailed:
		return sessionError(codes.FailedPrecondition, installReason(install), install.GetErrorMessage(), session)
	case session.GetState() != codemodev1.Session_STATE_FAILED:
		return nil
	case installFailed:
		return sessionError(codes.FailedPrecondition, installReason(install), failureMessage(session), session)
	default:
		return sessionError(codes.Unavailable, ReasonSandboxStartFailed, failureMessage(session), session)
	}
}

func installReason(install *codemodev1.DependencyInstall) string {
	if install.GetErrorReason() != "" {
		return install.GetErrorReason()
	}
	return ReasonDepsInstallFailed
}

func failureMessage(session *codemodev1.Session) string {
	if session.GetStateMessage() != "" {
		return session.GetStateMessage()
	}
	if message := session.GetLastInstall().GetErrorMessage(); message != "" {
		return message
	}
	return "the session failed"
}
