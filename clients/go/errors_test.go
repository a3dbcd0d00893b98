package codemode

import (
	"errors"
	"fmt"
	"testing"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
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
