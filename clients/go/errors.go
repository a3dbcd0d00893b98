package codemode

import (
	"errors"
	"fmt"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// ErrorDomain is the google.rpc.ErrorInfo domain of every codemode error.
const ErrorDomain = "codemode.dev"

// Error is a failed RPC. Branch on Reason (a codemode.v1.ErrorReason value
// name without the ERROR_REASON_ prefix, e.g. "SESSION_NOT_FOUND") or Code,
// never on Message, which is for humans.
type Error struct {
	Code     codes.Code
	Reason   string
	Message  string
	Metadata map[string]string
	status   *status.Status
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
	for _, detail := range st.Details() {
		if info, ok := detail.(*errdetails.ErrorInfo); ok && info.GetDomain() == ErrorDomain {
			out.Reason = info.GetReason()
			out.Metadata = info.GetMetadata()
			break
		}
	}
	return out
}
