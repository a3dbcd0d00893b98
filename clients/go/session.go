package codemode

import (
	"context"
	"errors"
	"io"
	"iter"
	"time"

	codemodev1 "github.com/codemode-dev/codemode/clients/go/gen/codemode/v1"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/types/known/durationpb"
)

// closeTimeout bounds Session.Close, which must not hang a deferred call
// when the server is gone.
const closeTimeout = 30 * time.Second

// Session is a stateful Python interpreter in its own sandbox: variables,
// imports and functions persist across runs. Use it from one goroutine at a
// time; the server rejects a second concurrent run with SESSION_BUSY.
type Session struct {
	client *Client
	name   string
	info   *codemodev1.Session
}

// Name is the session's resource name, "sessions/{id}".
func (s *Session) Name() string { return s.name }

// Info is the session as CreateSession (or the last Wait) returned it; nil
// for handles made with Client.Session until Wait is called.
func (s *Session) Info() *codemodev1.Session { return s.info }

// Wait waits (WaitSession, bounded by ctx) until the session is neither
// STARTING nor INSTALLING and returns it, whatever state it settled in:
// check its State, StateMessage and LastInstall. For calls made with NoWait.
func (s *Session) Wait(ctx context.Context) (*codemodev1.Session, error) {
	info := s.info
	if !transient(info.GetState()) {
		// Unknown or settled when last seen: ask once, so the answer is current.
		resp, err := s.client.sessions.WaitSession(ctx, &codemodev1.WaitSessionRequest{Name: s.name, Timeout: durationpb.New(waitSessionTimeout)})
		if err != nil {
			return nil, wrapError(err)
		}
		info = resp.GetSession()
	}
	info, err := s.client.waitSettled(ctx, info)
	if err != nil {
		return nil, err
	}
	s.info = info
	return info, nil
}

// Close deletes the session and stops its sandbox. It is meant for
// `defer s.Close()`, so it uses its own deadline rather than a caller's
// context that may already be cancelled.
func (s *Session) Close() error {
	ctx, cancel := context.WithTimeout(context.Background(), closeTimeout)
	defer cancel()
	_, err := s.client.sessions.DeleteSession(ctx, &codemodev1.DeleteSessionRequest{Name: s.name})
	if Reason(wrapError(err)) == "SESSION_NOT_FOUND" {
		return nil // already deleted or expired: closing is idempotent, as io.Closer users expect
	}
	return wrapError(err)
}

// Reset replaces the interpreter, dropping user state.
func (s *Session) Reset(ctx context.Context) error {
	_, err := s.client.sessions.ResetSession(ctx, &codemodev1.ResetSessionRequest{Name: s.name})
	return wrapError(err)
}

// RunOption configures one execution.
type RunOption func(*codemodev1.ExecuteRequest)

// WithTimeout is the server-side execution timeout: when it expires the
// code is interrupted and the run finishes with EXECUTION_STATUS_TIMEOUT
// (unlike a context deadline, which ends the call with DEADLINE_EXCEEDED).
func WithTimeout(d time.Duration) RunOption {
	return func(r *codemodev1.ExecuteRequest) { r.Timeout = durationpb.New(d) }
}

// WithRequestID makes the run idempotent (the id must be unique in the
// session): a retry with the same id never runs the code twice. While the
// first run is going, the retry attaches to it; after it ended, the retry
// receives its recorded events from the start. The same id with different
// code is refused with ALREADY_EXISTS (ReasonDuplicateRequest).
func WithRequestID(id string) RunOption {
	return func(r *codemodev1.ExecuteRequest) { r.RequestId = id }
}

// Result is everything one execution produced.
type Result struct {
	// Execution is "sessions/{session}/executions/{execution}".
	Execution string
	Stdout    string
	Stderr    string
	// Value is the final expression's value, nil when there was none.
	Value *codemodev1.ExecutionResult
	// Error is the exception the code raised, nil when it raised none.
	Error    *codemodev1.ExecutionError
	Finished *codemodev1.ExecutionFinished
}

// Status is how the execution ended.
func (r *Result) Status() codemodev1.ExecutionStatus { return r.Finished.GetStatus() }

// OK reports whether the code ran to completion.
func (r *Result) OK() bool { return r.Status() == codemodev1.ExecutionStatus_EXECUTION_STATUS_OK }

// ErrNoFinished means the stream ended without its mandatory last event,
// which only a broken server or proxy causes.
var ErrNoFinished = errors.New("codemode: execution stream ended without a finished event")

// Run executes code and collects its events. A failure of the code itself
// (exception, timeout) is reported in the Result, not as an error; errors
// are for failed calls (unknown session, auth, cancellation, ...).
func (s *Session) Run(ctx context.Context, code string, opts ...RunOption) (*Result, error) {
	result := &Result{}
	for event, err := range s.Stream(ctx, code, opts...) {
		if err != nil {
			return result, err
		}
		switch e := event.GetEvent().(type) {
		case *codemodev1.ExecuteResponse_Started:
			result.Execution = e.Started.GetExecution()
		case *codemodev1.ExecuteResponse_Output:
			if e.Output.GetStream() == codemodev1.OutputStream_OUTPUT_STREAM_STDERR {
				result.Stderr += string(e.Output.GetData())
			} else {
				result.Stdout += string(e.Output.GetData())
			}
		case *codemodev1.ExecuteResponse_Result:
			result.Value = e.Result
		case *codemodev1.ExecuteResponse_Error:
			result.Error = e.Error
		case *codemodev1.ExecuteResponse_Finished:
			result.Finished = e.Finished
		}
	}
	if result.Finished == nil {
		return result, ErrNoFinished
	}
	return result, nil
}

// Stream executes code and yields its events as they arrive, heartbeats
// included (a heartbeat carries the sequence of the event before it).
// Breaking out of the loop cancels the call, which cancels the execution on
// the server: it finishes CANCELLED, as AttachExecution then shows. A call
// failure is yielded once as the error and ends the sequence.
func (s *Session) Stream(ctx context.Context, code string, opts ...RunOption) iter.Seq2[*codemodev1.ExecuteResponse, error] {
	req := &codemodev1.ExecuteRequest{Session: s.name, Code: code}
	for _, opt := range opts {
		opt(req)
	}
	return events(ctx, func(ctx context.Context) (grpc.ServerStreamingClient[codemodev1.ExecuteResponse], error) {
		return s.client.execute.Execute(ctx, req)
	})
}

// events yields the responses of an execution stream (Execute or
// AttachExecution) until it ends.
func events(ctx context.Context, open func(context.Context) (grpc.ServerStreamingClient[codemodev1.ExecuteResponse], error)) iter.Seq2[*codemodev1.ExecuteResponse, error] {
	return func(yield func(*codemodev1.ExecuteResponse, error) bool) {
		// Cancelling on every exit path releases the HTTP/2 stream even when
		// the caller stops early.
		ctx, cancel := context.WithCancel(ctx)
		defer cancel()
		stream, err := open(ctx)
		if err != nil {
			yield(nil, wrapError(err))
			return
		}
		for {
			event, err := stream.Recv()
			if errors.Is(err, io.EOF) {
				return
			}
			if err != nil {
				yield(nil, wrapError(err))
				return
			}
			if !yield(event, nil) {
				return
			}
		}
	}
}
