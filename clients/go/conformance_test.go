package codemode_test

// The Go client against conformance/cases.json. The field semantics are
// defined in conformance/README.md and shared with the Python, TypeScript
// and Java runners. Run through conformance/with_server.py, which starts a
// real server and passes its address in CODEMODE_CONFORMANCE_TARGET.

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	codemode "github.com/codemode-dev/codemode/clients/go"
	codemodev1 "github.com/codemode-dev/codemode/clients/go/gen/codemode/v1"
	"google.golang.org/grpc/codes"
)

const (
	retryWhileBusy = 30 * time.Second
	stepTimeout    = 90 * time.Second
)

type conformanceFile struct {
	Cases []conformanceCase `json:"cases"`
}

type conformanceCase struct {
	Name     string `json:"name"`
	Requires string `json:"requires"`
	Session  *struct {
		OutputBudgetBytes int64 `json:"output_budget_bytes"`
	} `json:"session"`
	Steps []step `json:"steps"`
}

type step struct {
	Execute *struct {
		Code                   string   `json:"code"`
		Session                string   `json:"session"`
		Auth                   string   `json:"auth"`
		ExecutionTimeoutSecond *float64 `json:"execution_timeout_seconds"`
		CallDeadlineSeconds    *float64 `json:"call_deadline_seconds"`
		CancelAfterFirstOutput bool     `json:"cancel_after_first_output"`
		RetryWhileBusy         bool     `json:"retry_while_busy"`
	} `json:"execute"`
	CreateSkill *struct {
		ID          string `json:"id"`
		Description string `json:"description"`
		Source      string `json:"source"`
	} `json:"create_skill"`
	UpdateSkill *struct {
		ID          string `json:"id"`
		Description string `json:"description"`
		Source      string `json:"source"`
		Etag        string `json:"etag"`
	} `json:"update_skill"`
	GetSkill *struct {
		ID string `json:"id"`
	} `json:"get_skill"`
	SearchSkills *struct {
		Query string `json:"query"`
	} `json:"search_skills"`
	DeleteSkill *struct {
		ID string `json:"id"`
	} `json:"delete_skill"`
	CloseSession *struct{}   `json:"close_session"`
	Expect       expectation `json:"expect"`
}

type expectation struct {
	Status      string           `json:"status"`
	Value       *json.RawMessage `json:"value"`
	ValueRepr   *string          `json:"value_repr"`
	NoValue     bool             `json:"no_value"`
	Stdout      *string          `json:"stdout"`
	Stderr      *string          `json:"stderr"`
	StdoutEnds  *string          `json:"stdout_ends_with"`
	OutputOrder []string         `json:"output_order"`
	FirstBefore *float64         `json:"first_output_before_finished_seconds"`
	Cancelled   bool             `json:"cancelled"`
	Error       *struct {
		Type              string   `json:"type"`
		MessageContains   string   `json:"message_contains"`
		TracebackContains []string `json:"traceback_contains"`
	} `json:"error"`
	Truncated *struct {
		Stream     string `json:"stream"`
		TotalBytes uint64 `json:"total_bytes"`
	} `json:"truncated"`
	ErrorStatus *struct {
		Code   string  `json:"code"`
		Reason *string `json:"reason"`
	} `json:"error_status"`
	Name           string `json:"name"`
	SourceContains string `json:"source_contains"`
	ContainsName   string `json:"contains_name"`
}

type observed struct {
	outputs       []*codemodev1.ExecutionOutput
	result        *codemodev1.ExecutionResult
	execError     *codemodev1.ExecutionError
	finished      *codemodev1.ExecutionFinished
	firstOutputAt time.Time
	finishedAt    time.Time
	callErr       error
	cancelled     bool
}

func (o *observed) text(stream codemodev1.OutputStream) string {
	var b strings.Builder
	for _, out := range o.outputs {
		if out.GetStream() == stream {
			b.Write(out.GetData())
		}
	}
	return b.String()
}

func loadCases(t *testing.T) []conformanceCase {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join("..", "..", "conformance", "cases.json"))
	if err != nil {
		t.Fatal(err)
	}
	suffix := make([]byte, 4)
	_, _ = rand.Read(suffix)
	text := strings.ReplaceAll(string(raw), "${uid}", "go"+hex.EncodeToString(suffix))
	var file conformanceFile
	if err := json.Unmarshal([]byte(text), &file); err != nil {
		t.Fatal(err)
	}
	return file.Cases
}

func TestConformance(t *testing.T) {
	target := os.Getenv("CODEMODE_CONFORMANCE_TARGET")
	if target == "" {
		if os.Getenv("CI") != "" {
			t.Fatal("CODEMODE_CONFORMANCE_TARGET is required under CI (run via conformance/with_server.py)")
		}
		t.Skip("no server: run via `python conformance/with_server.py go test ./...`")
	}
	token := os.Getenv("CODEMODE_CONFORMANCE_TOKEN")
	// mTLS when the harness started the server with --mtls, else plaintext.
	transport := codemode.WithInsecure()
	if ca := os.Getenv("CODEMODE_CONFORMANCE_CA"); ca != "" {
		transport = codemode.WithTLSFiles(ca, os.Getenv("CODEMODE_CONFORMANCE_CLIENT_CERT"), os.Getenv("CODEMODE_CONFORMANCE_CLIENT_KEY"))
	}
	clients := map[string]*codemode.Client{}
	for auth, opts := range map[string][]codemode.Option{
		"token": {transport, codemode.WithToken(token)},
		"none":  {transport},
		"wrong": {transport, codemode.WithToken(token + "-wrong")},
	} {
		client, err := codemode.Dial(target, opts...)
		if err != nil {
			t.Fatal(err)
		}
		defer client.Close()
		clients[auth] = client
	}
	for _, c := range loadCases(t) {
		t.Run(c.Name, func(t *testing.T) { runCase(t, clients, c) })
	}
}

func runCase(t *testing.T, clients map[string]*codemode.Client, c conformanceCase) {
	client := clients["token"]
	ctx, cancel := context.WithTimeout(context.Background(), stepTimeout*time.Duration(len(c.Steps)+1))
	defer cancel()
	if c.Requires == "skills" {
		if _, err := client.Skills("").Search(ctx, "probe", 1); codemode.Code(err) == codes.Unimplemented {
			t.Skip("the server does not implement SkillStoreService")
		}
	}
	var session *codemode.Session
	for _, s := range c.Steps {
		if s.Execute != nil && s.Execute.Session == "" {
			config := &codemodev1.SessionConfig{}
			if c.Session != nil {
				config.OutputBudgetBytes = c.Session.OutputBudgetBytes
			}
			var err error
			if session, err = client.CreateSession(ctx, config); err != nil {
				t.Fatalf("create session: %v", err)
			}
			defer session.Close()
			break
		}
	}
	for i, s := range c.Steps {
		if err := runStep(ctx, clients, session, s); err != nil {
			t.Fatalf("step %d: %v", i+1, err)
		}
	}
}

func runStep(ctx context.Context, clients map[string]*codemode.Client, session *codemode.Session, s step) error {
	skills := clients["token"].Skills("")
	want := s.Expect
	switch {
	case s.Execute != nil:
		return checkExecute(execute(ctx, clients, session, s), want)
	case s.CreateSkill != nil:
		skill, err := skills.Create(ctx, s.CreateSkill.ID, s.CreateSkill.Description, s.CreateSkill.Source)
		return checkSkill(skill, err, want)
	case s.UpdateSkill != nil:
		u := s.UpdateSkill
		skill, err := skills.Update(ctx, u.ID, u.Description, u.Source, u.Etag)
		return checkSkill(skill, err, want)
	case s.GetSkill != nil:
		skill, err := skills.Get(ctx, s.GetSkill.ID)
		return checkSkill(skill, err, want)
	case s.SearchSkills != nil:
		hits, err := skills.Search(ctx, s.SearchSkills.Query, 0)
		if err != nil {
			return checkCallError(err, want)
		}
		var names []string
		for _, hit := range hits {
			names = append(names, hit.GetSkill().GetName())
		}
		if want.ContainsName != "" && !contains(names, want.ContainsName) {
			return fmt.Errorf("%s not in search results %v", want.ContainsName, names)
		}
		return nil
	case s.CloseSession != nil:
		return session.Close()
	case s.DeleteSkill != nil:
		if err := skills.Delete(ctx, s.DeleteSkill.ID); err != nil {
			return checkCallError(err, want)
		}
		return nil
	}
	return fmt.Errorf("unknown step %+v", s)
}

func execute(ctx context.Context, clients map[string]*codemode.Client, session *codemode.Session, s step) *observed {
	spec := s.Execute
	auth := spec.Auth
	if auth == "" {
		auth = "token"
	}
	name := spec.Session
	if name == "" {
		name = session.Name()
	}
	handle := clients[auth].Session(name)
	var opts []codemode.RunOption
	if spec.ExecutionTimeoutSecond != nil {
		opts = append(opts, codemode.WithTimeout(time.Duration(*spec.ExecutionTimeoutSecond*float64(time.Second))))
	}
	giveUp := time.Now().Add(retryWhileBusy)
	for {
		callCtx, cancel := ctx, context.CancelFunc(func() {})
		if spec.CallDeadlineSeconds != nil {
			// The Go way to set a deadline: the context's.
			callCtx, cancel = context.WithTimeout(ctx, time.Duration(*spec.CallDeadlineSeconds*float64(time.Second)))
		}
		o := executeOnce(callCtx, handle, spec.Code, spec.CancelAfterFirstOutput, opts)
		cancel()
		if spec.RetryWhileBusy && codemode.Reason(o.callErr) == "SESSION_BUSY" && time.Now().Before(giveUp) {
			time.Sleep(100 * time.Millisecond)
			continue
		}
		return o
	}
}

func executeOnce(ctx context.Context, session *codemode.Session, code string, cancelOnOutput bool, opts []codemode.RunOption) *observed {
	o := &observed{}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	for event, err := range session.Stream(ctx, code, opts...) {
		if err != nil {
			o.callErr = err
			break
		}
		now := time.Now()
		switch e := event.GetEvent().(type) {
		case *codemodev1.ExecuteResponse_Output:
			o.outputs = append(o.outputs, e.Output)
			if o.firstOutputAt.IsZero() {
				o.firstOutputAt = now
			}
			if cancelOnOutput && !o.cancelled {
				// The Go way to cancel: cancel the context; the stream then
				// ends with a CANCELLED error.
				o.cancelled = true
				cancel()
			}
		case *codemodev1.ExecuteResponse_Result:
			o.result = e.Result
		case *codemodev1.ExecuteResponse_Error:
			o.execError = e.Error
		case *codemodev1.ExecuteResponse_Finished:
			o.finished, o.finishedAt = e.Finished, now
		}
	}
	return o
}

func checkCallError(err error, want expectation) error {
	if want.ErrorStatus == nil {
		return fmt.Errorf("unexpected call failure: %w", err)
	}
	if got := codeName(codemode.Code(err)); got != want.ErrorStatus.Code {
		return fmt.Errorf("status %s, want %s (%v)", got, want.ErrorStatus.Code, err)
	}
	if want.ErrorStatus.Reason != nil && codemode.Reason(err) != *want.ErrorStatus.Reason {
		return fmt.Errorf("reason %q, want %q (%v)", codemode.Reason(err), *want.ErrorStatus.Reason, err)
	}
	return nil
}

// codeName spells a code as gRPC's canonical upper-case name ("NOT_FOUND"),
// which is what cases.json uses in every language.
func codeName(c codes.Code) string {
	names := map[codes.Code]string{
		codes.OK: "OK", codes.Canceled: "CANCELLED", codes.Unknown: "UNKNOWN",
		codes.InvalidArgument: "INVALID_ARGUMENT", codes.DeadlineExceeded: "DEADLINE_EXCEEDED",
		codes.NotFound: "NOT_FOUND", codes.AlreadyExists: "ALREADY_EXISTS",
		codes.PermissionDenied: "PERMISSION_DENIED", codes.ResourceExhausted: "RESOURCE_EXHAUSTED",
		codes.FailedPrecondition: "FAILED_PRECONDITION", codes.Aborted: "ABORTED",
		codes.OutOfRange: "OUT_OF_RANGE", codes.Unimplemented: "UNIMPLEMENTED",
		codes.Internal: "INTERNAL", codes.Unavailable: "UNAVAILABLE", codes.DataLoss: "DATA_LOSS",
		codes.Unauthenticated: "UNAUTHENTICATED",
	}
	return names[c]
}

func checkSkill(skill *codemodev1.Skill, err error, want expectation) error {
	if err != nil {
		return checkCallError(err, want)
	}
	if want.ErrorStatus != nil {
		return fmt.Errorf("expected %s, the call succeeded", want.ErrorStatus.Code)
	}
	if want.Name != "" && skill.GetName() != want.Name {
		return fmt.Errorf("skill name %q, want %q", skill.GetName(), want.Name)
	}
	if want.SourceContains != "" && !strings.Contains(skill.GetSource(), want.SourceContains) {
		return fmt.Errorf("source %q lacks %q", skill.GetSource(), want.SourceContains)
	}
	return nil
}

func streamName(s codemodev1.OutputStream) string {
	if s == codemodev1.OutputStream_OUTPUT_STREAM_STDERR {
		return "stderr"
	}
	return "stdout"
}

func checkExecute(o *observed, want expectation) error {
	if o.callErr != nil {
		if want.Cancelled {
			if codemode.Code(o.callErr) != codes.Canceled {
				return fmt.Errorf("cancel ended with %v", o.callErr)
			}
			return nil
		}
		return checkCallError(o.callErr, want)
	}
	if want.ErrorStatus != nil {
		return fmt.Errorf("expected %s, the call succeeded", want.ErrorStatus.Code)
	}
	if want.Cancelled {
		if !o.cancelled || o.finished != nil {
			return errors.New("the call was not cancelled")
		}
		return nil
	}
	f := o.finished
	if f == nil {
		return errors.New("no finished event")
	}
	if want.Status != "" {
		if got := strings.TrimPrefix(f.GetStatus().String(), "EXECUTION_STATUS_"); got != want.Status {
			return fmt.Errorf("status %s, want %s (%s)", got, want.Status, f.GetMessage())
		}
	}
	if want.Value != nil {
		if o.result == nil || o.result.Json == nil {
			return fmt.Errorf("no JSON value (result %v)", o.result)
		}
		var got, expected any
		if err := json.Unmarshal([]byte(o.result.GetJson()), &got); err != nil {
			return fmt.Errorf("value is not JSON: %w", err)
		}
		_ = json.Unmarshal(*want.Value, &expected)
		if !reflect.DeepEqual(got, expected) {
			return fmt.Errorf("value %s, want %s", o.result.GetJson(), string(*want.Value))
		}
	}
	if want.ValueRepr != nil && (o.result == nil || o.result.GetRepr() != *want.ValueRepr) {
		return fmt.Errorf("repr of %v, want %q", o.result, *want.ValueRepr)
	}
	if want.NoValue && o.result != nil {
		return fmt.Errorf("unexpected value %v", o.result)
	}
	stdout := o.text(codemodev1.OutputStream_OUTPUT_STREAM_STDOUT)
	stderr := o.text(codemodev1.OutputStream_OUTPUT_STREAM_STDERR)
	if want.Stdout != nil && stdout != *want.Stdout {
		return fmt.Errorf("stdout %q, want %q", stdout, *want.Stdout)
	}
	if want.Stderr != nil && stderr != *want.Stderr {
		return fmt.Errorf("stderr %q, want %q", stderr, *want.Stderr)
	}
	if want.StdoutEnds != nil && !strings.HasSuffix(stdout, *want.StdoutEnds) {
		return fmt.Errorf("stdout does not end with %q", *want.StdoutEnds)
	}
	if want.OutputOrder != nil {
		var order []string
		for _, out := range o.outputs {
			name := streamName(out.GetStream())
			if len(order) == 0 || order[len(order)-1] != name {
				order = append(order, name)
			}
		}
		if !reflect.DeepEqual(order, want.OutputOrder) {
			return fmt.Errorf("output order %v, want %v", order, want.OutputOrder)
		}
	}
	if want.FirstBefore != nil {
		if o.firstOutputAt.IsZero() || o.finishedAt.IsZero() {
			return errors.New("no output or no finished event")
		}
		if gap := o.finishedAt.Sub(o.firstOutputAt).Seconds(); gap < *want.FirstBefore {
			return fmt.Errorf("first output only %.3fs before finished", gap)
		}
	}
	if want.Error != nil {
		e := o.execError
		if e == nil {
			return errors.New("no error event")
		}
		if e.GetType() != want.Error.Type {
			return fmt.Errorf("error type %s, want %s", e.GetType(), want.Error.Type)
		}
		if !strings.Contains(e.GetMessage(), want.Error.MessageContains) {
			return fmt.Errorf("error message %q", e.GetMessage())
		}
		for _, fragment := range want.Error.TracebackContains {
			if !strings.Contains(e.GetTraceback(), fragment) {
				return fmt.Errorf("traceback lacks %q: %q", fragment, e.GetTraceback())
			}
		}
	}
	if tr := want.Truncated; tr != nil {
		written, dropped := f.GetStdoutBytes(), f.GetStdoutTruncatedBytes()
		if tr.Stream == "stderr" {
			written, dropped = f.GetStderrBytes(), f.GetStderrTruncatedBytes()
		}
		var received, reported uint64
		for _, out := range o.outputs {
			if streamName(out.GetStream()) == tr.Stream {
				received += uint64(len(out.GetData()))
				reported += out.GetDroppedBytesBefore()
			}
		}
		switch {
		case written != tr.TotalBytes:
			return fmt.Errorf("%s_bytes %d, want %d", tr.Stream, written, tr.TotalBytes)
		case dropped == 0:
			return errors.New("nothing reported as truncated")
		case received+dropped != tr.TotalBytes:
			return fmt.Errorf("received %d + truncated %d != %d", received, dropped, tr.TotalBytes)
		case reported != dropped:
			return fmt.Errorf("dropped_bytes_before adds up to %d, finished says %d", reported, dropped)
		}
	}
	return nil
}

func contains(list []string, item string) bool {
	for _, x := range list {
		if x == item {
			return true
		}
	}
	return false
}
