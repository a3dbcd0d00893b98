// Package codemode is the Go client for codemode, a gRPC service that runs
// AI-agent Python code in isolated, stateful sandboxes.
//
// It is a thin layer over the generated stubs in gen/codemode/v1, covering
// every public service (sessions, Execute, skills, artifacts, dependencies):
// it adds what every caller would otherwise rewrite (bearer-token and mTLS
// auth, refusing to send a token in plaintext to a remote host, collecting
// an execution's events into a Result, waiting with WaitSession until a
// session that is starting or installing packages has settled, chunked
// artifact streaming over io.Reader and io.Writer, turning gRPC statuses into
// errors that carry the google.rpc.ErrorInfo reason, RetryInfo and
// BadRequest) and leaves everything else to the generated types, which it
// exposes as-is.
//
// Deadlines and cancellation use context.Context: the context's deadline
// becomes the gRPC deadline (and bounds the waiting calls), and cancelling it
// cancels the call; for Execute the server then cancels the running code.
package codemode
