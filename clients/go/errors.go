package codemode

import (
	"errors"
	"fmt"
	"strings"
	"time"

	codemodev1 "github.com/codemode-dev/codemode/clients/go/gen/codemode/v1"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// ErrorDomain is the google.rpc.ErrorInfo domain of every codemode error.
const ErrorDomain = "codemode.dev"

// Error is a failed RPC. Branch on Reason (one of the Reason* constants, a
// codemode.v1.ErrorReason value name without the ERROR_REASON_ prefix) or
// Code, never on Message, which is for humans.
//
// The standard google.rpc details the server attaches after its ErrorInfo
// are decoded too, so a caller needs no errdetails plumbing of its own:
// RetryDelay (RetryInfo) says when a retry can help, FieldViolations
// (BadRequest) which request fields were wrong, QuotaViolations
// (QuotaFailure) which quota ran out.
type Error struct {
	Code     codes.Code
	Reason   string
	Message  string
	Metadata map[string]string
	// RetryDelay is how long to wait before retrying; 0 when the server
	// sent no RetryInfo (then retrying is not expected to help).
	RetryDelay      time.Duration
	FieldViolations []*errdetails.BadRequest_FieldViolation
	QuotaViolations []*errdetails.QuotaFailure_Violation
	// Session is set when no RPC failed but the session settled badly
	// (CreateSession, Dependencies.Add and Sync wait for it): a FAILED
	// session (Reason SANDBOX_START_FAILED, or the failed start-up install's
	// reason, Message its state_message) or a failed install (Reason
	// DEPS_INSTALL_FAILED, Message the install's error_message). It is the
	// session as WaitSession last returned it; nil for RPC failures.
	Session *codemodev1.Session
	status  *status.Status
}

func (e *Error) Error() string {
	if e.Reason != "" {
		return fmt.Sprintf("codemode: %s (%s): %s", e.Code, e.Reason, e.Message)
	}
	return fmt.Sprintf("codemode: %s: %s", e.Code, e.Message)
}

// GRPCStatus lets status.FromError and status.Code see through an *Error,
// so code written against plain grpc-go keeps working.
func (e *Error) GRPCStatus() *status.Status { return e.status }

// Reason returns the ErrorInfo reason of err, or "" when err is not a
// codemode error or carries no reason.
func Reason(err error) string {
	var cmErr *Error
	if errors.As(err, &cmErr) {
		return cmErr.Reason
	}
	return ""
}

// Code returns the gRPC status code of err (codes.OK for nil, codes.Unknown
// for errors that did not come from gRPC).
func Code(err error) codes.Code {
	return status.Code(err)
}

// wrapError turns a gRPC status error into an *Error; other errors (and nil)
// pass through unchanged so that callers can still errors.Is(ctx.Err()).
func wrapError(err error) error {
	if err == nil {
		return nil
	}
	var already *Error
	if errors.As(err, &already) {
		return err
	}
	st, ok := status.FromError(err)
	if !ok {
		return err
	}
	out := &Error{Code: st.Code(), Message: st.Message(), status: st}
	// Details that fail to decode (unknown types) come back as errors and are
	// skipped: they must not hide the status itself.
	for _, detail := range st.Details() {
		switch d := detail.(type) {
		case *errdetails.ErrorInfo:
			// Only ours: a proxy's reason must not be mistaken for a codemode one.
			if d.GetDomain() == ErrorDomain && out.Reason == "" {
				// Tolerates servers that send the full enum value name.
				out.Reason = strings.TrimPrefix(d.GetReason(), "ERROR_REASON_")
				out.Metadata = d.GetMetadata()
			}
		case *errdetails.RetryInfo:
			out.RetryDelay = d.GetRetryDelay().AsDuration()
		case *errdetails.BadRequest:
			out.FieldViolations = append(out.FieldViolations, d.GetFieldViolations()...)
		case *errdetails.QuotaFailure:
			out.QuotaViolations = append(out.QuotaViolations, d.GetViolations()...)
		}
	}
	return out
}

// sessionError is the *Error for a session that settled badly: the same
// shape as a server's error (code, reason, metadata "session"), so callers
// branch on it with Reason and Code like on any other.
func sessionError(code codes.Code, reason, message string, session *codemodev1.Session) *Error {
	return &Error{
		Code:     code,
		Reason:   reason,
		Message:  message,
		Metadata: map[string]string{"session": session.GetName()},
		Session:  session,
		status:   status.New(code, message),
	}
}
