// Package codemode is the Go client for codemode, a gRPC service that runs
// AI-agent Python code in isolated, stateful sandboxes.
//
// It is a thin layer over the generated stubs in gen/codemode/v1: it adds
// what every caller would otherwise rewrite (bearer-token auth, TLS/mTLS
// setup, collecting an execution's events into a Result, turning gRPC
// statuses into errors that carry the google.rpc.ErrorInfo reason) and
// leaves everything else to the generated types, which it exposes as-is.
//
// Deadlines and cancellation use context.Context: the context's deadline
// becomes the gRPC deadline, and cancelling it cancels the call, which the
// server turns into an interrupt of the running code.
package codemode
