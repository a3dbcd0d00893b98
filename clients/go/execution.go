package codemode

import (
	"context"
	"iter"

	codemodev1 "github.com/codemode-dev/codemode/clients/go/gen/codemode/v1"
	"google.golang.org/grpc"
)

// AttachExecution yields the events of an execution
// ("sessions/{session}/executions/{execution}", from ExecutionStarted)
// whose sequence is above afterSequence (0: from the start): live while it
// runs, from the server's record after it ended, with no gap and no
// duplicate. To resume a broken stream, pass the last sequence seen,
// whatever the event (a heartbeat carries the sequence before it). The
// events are those Session.Stream yields; breaking out of the loop only
// detaches, the execution goes on. Errors: ReasonExecutionNotFound, and
// ReasonEventsExpired (OutOfRange, metadata "firstAvailableSequence") when
// afterSequence is below what the server still keeps.
func (c *Client) AttachExecution(ctx context.Context, execution string, afterSequence int64) iter.Seq2[*codemodev1.ExecuteResponse, error] {
	req := &codemodev1.AttachExecutionRequest{Execution: execution, AfterSequence: afterSequence}
	return events(ctx, func(ctx context.Context) (grpc.ServerStreamingClient[codemodev1.ExecuteResponse], error) {
		return c.execute.AttachExecution(ctx, req)
	})
}

// CancelExecution asks a running execution to stop and returns at once; its
// stream then ends with finished EXECUTION_STATUS_CANCELLED, and the session
// stays BUSY until the code has stopped. It reports false when the execution
// had already ended (a no-op).
func (c *Client) CancelExecution(ctx context.Context, execution string) (bool, error) {
	resp, err := c.execute.CancelExecution(ctx, &codemodev1.CancelExecutionRequest{Execution: execution})
	if err != nil {
		return false, wrapError(err)
	}
	return resp.GetCancelled(), nil
}
