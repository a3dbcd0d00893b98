package codemode

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"
)

func statusWithReason(t *testing.T, code codes.Code, domain, reason string) error {
	t.Helper()
	st, err := status.New(code, "boom").WithDetails(&errdetails.ErrorInfo{
		Domain: domain, Reason: reason, Metadata: map[string]string{"field": "session"},
	})
	if err != nil {
		t.Fatal(err)
	}
	return st.Err()
}

func TestWrapErrorKeepsStatusAndReason(t *testing.T) {
	err := wrapError(statusWithReason(t, codes.NotFound, ErrorDomain, "SESSION_NOT_FOUND"))
	var cmErr *Error
	if !errors.As(fmt.Errorf("context: %w", err), &cmErr) {
		t.Fatalf("not an *Error: %T", err)
	}
	if cmErr.Code != codes.NotFound || cmErr.Reason != "SESSION_NOT_FOUND" || cmErr.Metadata["field"] != "session" {
		t.Fatalf("unexpected %+v", cmErr)
	}
	if Code(err) != codes.NotFound || Reason(err) != "SESSION_NOT_FOUND" {
		t.Fatalf("helpers disagree: %v %q", Code(err), Reason(err))
	}
}

// The details the server attaches after its ErrorInfo (server/errors.py:
// with_details) come out as plain fields, in the order the server sent them.
func TestWrapErrorDecodesRetryBadRequestAndQuotaDetails(t *testing.T) {
	st, err := status.New(codes.ResourceExhausted, "over quota").WithDetails(
		&errdetails.ErrorInfo{Domain: ErrorDomain, Reason: "ERROR_REASON_SESSION_LIMIT_REACHED"},
		&errdetails.BadRequest{FieldViolations: []*errdetails.BadRequest_FieldViolation{
			{Field: "session.config.memory_limit_bytes", Description: "at most 4294967296"},
			{Field: "session.labels", Description: "at most 64 labels"},
		}},
		&errdetails.QuotaFailure{Violations: []*errdetails.QuotaFailure_Violation{
			{Subject: "tenant:alice", Description: "live sessions"},
		}},
		&errdetails.RetryInfo{RetryDelay: durationpb.New(1500 * time.Millisecond)},
	)
	if err != nil {
		t.Fatal(err)
	}
	var cmErr *Error
	if !errors.As(wrapError(st.Err()), &cmErr) {
		t.Fatal("not an *Error")
	}
	if cmErr.Reason != ReasonSessionLimitReached {
		t.Fatalf("the ERROR_REASON_ prefix must be stripped, got %q", cmErr.Reason)
	}
	if cmErr.RetryDelay != 1500*time.Millisecond {
		t.Fatalf("retry delay %v", cmErr.RetryDelay)
	}
	if len(cmErr.FieldViolations) != 2 || cmErr.FieldViolations[0].GetField() != "session.config.memory_limit_bytes" ||
		cmErr.FieldViolations[1].GetDescription() != "at most 64 labels" {
		t.Fatalf("field violations %v", cmErr.FieldViolations)
	}
	if len(cmErr.QuotaViolations) != 1 || cmErr.QuotaViolations[0].GetSubject() != "tenant:alice" {
		t.Fatalf("quota violations %v", cmErr.QuotaViolations)
	}
}

func TestWrapErrorWithoutDetailsHasNoRetryDelay(t *testing.T) {
	var cmErr *Error
	if !errors.As(wrapError(status.Error(codes.Unavailable, "down")), &cmErr) {
		t.Fatal("not an *Error")
	}
	if cmErr.RetryDelay != 0 || cmErr.FieldViolations != nil || cmErr.QuotaViolations != nil || cmErr.Reason != "" {
		t.Fatalf("details invented: %+v", cmErr)
	}
}

func TestWrapErrorIgnoresOtherDomains(t *testing.T) {
	err := wrapError(statusWithReason(t, codes.Unavailable, "example.com", "SOMETHING"))
	if Reason(err) != "" || Code(err) != codes.Unavailable {
		t.Fatalf("foreign ErrorInfo leaked: %v", err)
	}
}

func TestWrapErrorPassesNonStatusErrorsThrough(t *testing.T) {
	plain := errors.New("not grpc")
	if wrapError(plain) != plain || wrapError(nil) != nil {
		t.Fatal("non-status errors must pass through unchanged")
	}
}

func TestDialRejectsHalfAClientCertificate(t *testing.T) {
	if _, err := Dial("127.0.0.1:1", WithTLSFiles("", "client.crt", "")); err == nil {
		t.Fatal("a certificate without its key must be refused")
	}
	if _, err := Dial("127.0.0.1:1", WithInsecure(), WithTLSFiles("", "", "")); err == nil {
		t.Fatal("plaintext plus TLS must be refused")
	}
}

// The same targets as the Python client's is_local_target and the conformance
// case token_is_never_sent_in_plaintext_to_a_remote_host.
func TestDialRefusesATokenInPlaintextToARemoteHost(t *testing.T) {
	for _, target := range []string{"codemode.example:50051", "10.1.2.3:50051", "[2001:db8::1]:443"} {
		_, err := Dial(target, WithInsecure(), WithToken("s3cret"))
		if err == nil || !strings.Contains(err.Error(), "refusing to send the API token in plaintext to") {
			t.Fatalf("%s: want a refusal, got %v", target, err)
		}
		client, err := Dial(target, WithInsecure(), WithToken("s3cret"), WithAllowInsecureToken())
		if err != nil {
			t.Fatalf("%s with WithAllowInsecureToken: %v", target, err)
		}
		client.Close()
		client, err = Dial(target, WithInsecure()) // no token, nothing to leak
		if err != nil {
			t.Fatalf("%s without a token: %v", target, err)
		}
		client.Close()
	}
	for _, target := range []string{"127.0.0.1:50051", "127.8.9.10:50051", "localhost:50051", "[::1]:50051", "unix:/tmp/codemode.sock", "unix-abstract:codemode"} {
		client, err := Dial(target, WithInsecure(), WithToken("s3cret"))
		if err != nil {
			t.Fatalf("%s is local, yet: %v", target, err)
		}
		client.Close()
	}
}
