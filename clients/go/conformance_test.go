package codemode_test

// The Go client against conformance/cases.json. The field semantics are
// defined in conformance/README.md and shared with the Python, TypeScript
// and Java runners. Run through conformance/with_server.py, which starts a
// real server and passes its address in CODEMODE_CONFORMANCE_TARGET.

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"iter"
	"math"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	codemode "github.com/codemode-dev/codemode/clients/go"
	codemodev1 "github.com/codemode-dev/codemode/clients/go/gen/codemode/v1"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

const (
	retryWhileBusy = 30 * time.Second
	stepTimeout    = 90 * time.Second
)

type conformanceFile struct {
	Cases []conformanceCase `json:"cases"`
}

type conformanceCase struct {
	Name     string       `json:"name"`
	Requires string       `json:"requires"`
	Session  *sessionSpec `json:"session"`
	Steps    []step       `json:"steps"`
}

// sessionSpec is a session configuration of cases.json; an absent key stays
// unset (nil), so the server's default applies, and a present one is sent
// even when false.
type sessionSpec struct {
	OutputBudgetBytes *int64   `json:"output_budget_bytes"`
	Deps              []string `json:"deps"`
	AllowRuntimeDeps  *bool    `json:"allow_runtime_deps"`
	SyncDepsOnStart   *bool    `json:"sync_deps_on_start"`
}

func (s *sessionSpec) config() *codemodev1.SessionConfig {
	config := &codemodev1.SessionConfig{}
	if s != nil {
		config.OutputBudgetBytes = s.OutputBudgetBytes
		config.Deps = s.Deps
		config.AllowRuntimeDeps = s.AllowRuntimeDeps
		config.SyncDepsOnStart = s.SyncDepsOnStart
	}
	return config
}

// signed is one non-heartbeat event as the cases compare it: its sequence
// and a signature of its kind and payload (conformance/README.md).
type signed struct {
	sequence  int64
	signature string
}

func signature(event *codemodev1.ExecuteResponse) string {
	switch e := event.GetEvent().(type) {
	case *codemodev1.ExecuteResponse_Started:
		return "started " + e.Started.GetExecution()
	case *codemodev1.ExecuteResponse_Output:
		return "output " + streamName(e.Output.GetStream()) + " " + string(e.Output.GetData())
	case *codemodev1.ExecuteResponse_Result:
		return fmt.Sprintf("result %q %q", e.Result.GetJson(), e.Result.GetRepr())
	case *codemodev1.ExecuteResponse_Error:
		return "error " + e.Error.GetType() + " " + e.Error.GetMessage()
	case *codemodev1.ExecuteResponse_Finished:
		return "finished " + e.Finished.GetStatus().String()
	}
	return fmt.Sprintf("unknown %v", event)
}

// caseState is what a case's later steps need from earlier ones: the last
// execution (conformance/README.md, "The last execution").
type caseState struct {
	session       *codemode.Session
	lastExecution string
	lastEvents    []signed
}

type step struct {
	// Auth names the client that makes the call ("" = "principal"); Tenant is
	// the request's tenant field ("" = the caller's own).
	Auth            string       `json:"auth"`
	Tenant          string       `json:"tenant"`
	Execute         *executeSpec `json:"execute"`
	AttachExecution *struct {
		AfterSequence int64  `json:"after_sequence"`
		ExecutionID   string `json:"execution_id"`
	} `json:"attach_execution"`
	CancelExecution *struct{}    `json:"cancel_execution"`
	CreateSession   *sessionSpec `json:"create_session"`
	CreateSkill     *struct {
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
	UploadArtifact *struct {
		ID          string `json:"id"`
		Type        string `json:"type"`
		Description string `json:"description"`
		Data        string `json:"data"`
		Repeat      *int   `json:"repeat"`
	} `json:"upload_artifact"`
	GetArtifact *struct {
		ID string `json:"id"`
	} `json:"get_artifact"`
	DownloadArtifact *struct {
		ID string `json:"id"`
	} `json:"download_artifact"`
	ListArtifacts  *struct{} `json:"list_artifacts"`
	DeleteArtifact *struct {
		ID string `json:"id"`
	} `json:"delete_artifact"`
	ListDependencies *struct{} `json:"list_dependencies"`
	AddDependency    *struct {
		Package string `json:"package"`
	} `json:"add_dependency"`
	PlaintextClient *struct {
		Target string `json:"target"`
	} `json:"plaintext_client"`
	CloseSession  *struct{}   `json:"close_session"`
	GetSession    *struct{}   `json:"get_session"`
	DeleteSession *struct{}   `json:"delete_session"`
	ListSessions  *struct{}   `json:"list_sessions"`
	Expect        expectation `json:"expect"`
}

type executeSpec struct {
	Code                            string   `json:"code"`
	Session                         string   `json:"session"`
	RequestID                       string   `json:"request_id"`
	ExecutionTimeoutSecond          *float64 `json:"execution_timeout_seconds"`
	CallDeadlineSeconds             *float64 `json:"call_deadline_seconds"`
	CancelAfterFirstOutput          bool     `json:"cancel_after_first_output"`
	CancelExecutionAfterFirstOutput bool     `json:"cancel_execution_after_first_output"`
	AttachAfterOutputs              int      `json:"attach_after_outputs"`
	RetryWhileBusy                  bool     `json:"retry_while_busy"`
}

// needsSession: the steps that act on the case's own session.
func (s step) needsSession() bool {
	return (s.Execute != nil && s.Execute.Session == "") || s.ListDependencies != nil || s.AddDependency != nil ||
		s.GetSession != nil || s.DeleteSession != nil || s.ListSessions != nil ||
		s.AttachExecution != nil || s.CancelExecution != nil
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
		TotalBytes int64  `json:"total_bytes"`
	} `json:"truncated"`
	ErrorStatus *struct {
		Code              string   `json:"code"`
		Reason            *string  `json:"reason"`
		RetryDelaySeconds *float64 `json:"retry_delay_seconds"`
		FieldViolation    *string  `json:"field_violation"`
	} `json:"error_status"`
	Name                string  `json:"name"`
	SourceContains      string  `json:"source_contains"`
	ContainsName        string  `json:"contains_name"`
	LacksName           string  `json:"lacks_name"`
	ListsCaseSession    *bool   `json:"lists_case_session"`
	SessionTenant       *string `json:"session_tenant"`
	SessionState        *string `json:"session_state"`
	ContiguousSequences bool    `json:"contiguous_sequences"`
	SameEventsAsLast    bool    `json:"same_events_as_last_execution"`
	AttachMatchesStream bool    `json:"attach_matches_stream"`
	ExecutionCancelled  *bool   `json:"execution_cancelled"`
	OutputsBeforeResult *int    `json:"outputs_before_result_at_least"`
	Artifact            *struct {
		Name        *string `json:"name"`
		Type        *string `json:"type"`
		Description *string `json:"description"`
		SizeBytes   *int64  `json:"size_bytes"`
		Sha256      *string `json:"sha256"`
	} `json:"artifact"`
	DataSha256      string           `json:"data_sha256"`
	DataJSON        *json.RawMessage `json:"data_json"`
	Dependencies    []string         `json:"dependencies"`
	RefusedContains string           `json:"refused_contains"`
}

type observed struct {
	outputs       []*codemodev1.ExecutionOutput
	result        *codemodev1.ExecutionResult
	execError     *codemodev1.ExecutionError
	finished      *codemodev1.ExecutionFinished
	firstOutputAt time.Time
	finishedAt    time.Time
	// outputsBeforeResult is how many output events had arrived when the
	// result event did; -1 without a result.
	outputsBeforeResult int
	callErr             error
	cancelled           bool
	// execution is the name from the started event; events every
	// non-heartbeat event, in order.
	execution string
	events    []signed
	// attached is what attach_after_outputs read, after attachedAfter.
	attached      []signed
	attachedAfter int64
	// sideErr is a failed CancelExecution or AttachExecution made mid-stream.
	sideErr error
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

func loadCases(t *testing.T, principal string) []conformanceCase {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join("..", "..", "conformance", "cases.json"))
	if err != nil {
		t.Fatal(err)
	}
	suffix := make([]byte, 4)
	_, _ = rand.Read(suffix)
	text := strings.ReplaceAll(string(raw), "${uid}", "go"+principal+hex.EncodeToString(suffix))
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
	// Every case as the token principal and, when the harness started the
	// server with --mtls, as the mTLS principal.
	principals := []string{"token"}
	if os.Getenv("CODEMODE_CONFORMANCE_CA") != "" {
		principals = append(principals, "mtls")
	}
	for _, principal := range principals {
		t.Run(principal, func(t *testing.T) {
			clients := principalClients(t, target, token, principal)
			for _, c := range loadCases(t, principal) {
				t.Run(c.Name, func(t *testing.T) { runCase(t, clients, token, c) })
			}
		})
	}
}

// principalClients dials the `auth` clients of one principal's run
// (conformance/README.md, "Principals"); they close when t ends.
func principalClients(t *testing.T, target, token, principal string) map[string]*codemode.Client {
	ca := os.Getenv("CODEMODE_CONFORMANCE_CA")
	// transport presents the named certificate over mTLS; plaintext without a CA.
	transport := func(certificate string) codemode.Option {
		if ca == "" {
			return codemode.WithInsecure()
		}
		return codemode.WithTLSFiles(ca, os.Getenv("CODEMODE_CONFORMANCE_"+certificate+"_CERT"), os.Getenv("CODEMODE_CONFORMANCE_"+certificate+"_KEY"))
	}
	own, ownToken := transport("UNMAPPED"), token
	if principal == "mtls" {
		own, ownToken = transport("CLIENT"), ""
	}
	clients := map[string]*codemode.Client{}
	for auth, opts := range map[string][]codemode.Option{
		"principal":    {own, codemode.WithToken(ownToken)},
		"none":         {transport("UNMAPPED")},
		"wrong":        {own, codemode.WithToken(token + "-wrong")},
		"other_tenant": {transport("UNMAPPED"), codemode.WithToken(os.Getenv("CODEMODE_CONFORMANCE_OTHER_TOKEN"))},
	} {
		client, err := codemode.Dial(target, opts...)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { client.Close() })
		clients[auth] = client
	}
	return clients
}

func runCase(t *testing.T, clients map[string]*codemode.Client, token string, c conformanceCase) {
	client := clients["principal"]
	ctx, cancel := context.WithTimeout(context.Background(), stepTimeout*time.Duration(len(c.Steps)+1))
	defer cancel()
	if c.Requires == "skills" {
		if _, err := client.Skills("").Search(ctx, "probe", 1, ""); codemode.Code(err) == codes.Unimplemented {
			t.Skip("the server does not implement SkillStoreService")
		}
	}
	state := &caseState{}
	for _, s := range c.Steps {
		if s.needsSession() {
			// The client's own CreateSession, which waits until the session is READY.
			session, err := client.CreateSession(ctx, c.Session.config())
			if err != nil {
				t.Fatalf("create session: %v", err)
			}
			defer session.Close()
			state.session = session
			break
		}
	}
	for i, s := range c.Steps {
		if err := runStep(ctx, clients, token, state, s); err != nil {
			t.Fatalf("step %d: %v", i+1, err)
		}
	}
}

func runStep(ctx context.Context, clients map[string]*codemode.Client, token string, state *caseState, s step) error {
	session := state.session
	auth := s.Auth
	if auth == "" {
		auth = "principal"
	}
	client := clients[auth]
	skills := client.Skills(s.Tenant)
	artifacts := client.Artifacts(s.Tenant)
	// The client wraps no GetSession/ListSessions, and its Close forgives
	// NOT_FOUND: the session steps use the generated stub on its connection.
	sessions := codemodev1.NewSessionServiceClient(client.Conn())
	want := s.Expect
	switch {
	case s.GetSession != nil:
		resp, err := sessions.GetSession(ctx, &codemodev1.GetSessionRequest{Name: session.Name()})
		if err != nil {
			return checkCallError(err, want)
		}
		if want.ErrorStatus != nil {
			return fmt.Errorf("expected %s, the call succeeded", want.ErrorStatus.Code)
		}
		if want.SessionTenant != nil && resp.GetSession().GetTenant() != *want.SessionTenant {
			return fmt.Errorf("session tenant %q, want %q", resp.GetSession().GetTenant(), *want.SessionTenant)
		}
		if got := strings.TrimPrefix(resp.GetSession().GetState().String(), "STATE_"); want.SessionState != nil && got != *want.SessionState {
			return fmt.Errorf("session state %s, want %s (%s)", got, *want.SessionState, resp.GetSession().GetStateMessage())
		}
		return nil
	case s.CreateSession != nil:
		created, err := client.CreateSession(ctx, s.CreateSession.config())
		if err != nil {
			return checkCallError(err, want)
		}
		defer created.Close()
		if err := noErrorExpected(want); err != nil {
			return err
		}
		if got := created.Info().GetState(); got != codemodev1.Session_STATE_READY {
			return fmt.Errorf("CreateSession returned a %s session", got)
		}
		return nil
	case s.DeleteSession != nil:
		if _, err := sessions.DeleteSession(ctx, &codemodev1.DeleteSessionRequest{Name: session.Name()}); err != nil {
			return checkCallError(err, want)
		}
		return noErrorExpected(want)
	case s.ListSessions != nil:
		var names []string
		for pageToken := ""; ; {
			resp, err := sessions.ListSessions(ctx, &codemodev1.ListSessionsRequest{Tenant: s.Tenant, PageToken: pageToken})
			if err != nil {
				return checkCallError(err, want)
			}
			for _, listed := range resp.GetSessions() {
				names = append(names, listed.GetName())
			}
			if pageToken = resp.GetNextPageToken(); pageToken == "" {
				break
			}
		}
		if err := noErrorExpected(want); err != nil {
			return err
		}
		if want.ListsCaseSession != nil && contains(names, session.Name()) != *want.ListsCaseSession {
			return fmt.Errorf("case session %s listed: %v (%v)", session.Name(), !*want.ListsCaseSession, names)
		}
		return nil
	case s.UploadArtifact != nil:
		u := s.UploadArtifact
		repeat := 1
		if u.Repeat != nil {
			repeat = *u.Repeat
		}
		artifactType := codemodev1.ArtifactType(codemodev1.ArtifactType_value["ARTIFACT_TYPE_"+u.Type])
		// The Go way to stream an upload: any io.Reader.
		data := strings.NewReader(strings.Repeat(u.Data, repeat))
		artifact, err := artifacts.Upload(ctx, u.ID, data, codemode.WithArtifactType(artifactType), codemode.WithDescription(u.Description))
		return checkArtifact(artifact, err, want)
	case s.GetArtifact != nil:
		artifact, err := artifacts.Get(ctx, s.GetArtifact.ID)
		return checkArtifact(artifact, err, want)
	case s.DownloadArtifact != nil:
		// The Go way to stream a download: any io.Writer.
		var data bytes.Buffer
		artifact, err := artifacts.Download(ctx, s.DownloadArtifact.ID, &data)
		if err := checkArtifact(artifact, err, want); err != nil || want.ErrorStatus != nil {
			return err
		}
		return checkDownloaded(artifact, data.Bytes(), want)
	case s.ListArtifacts != nil:
		list, err := artifacts.List(ctx)
		if err != nil {
			return checkCallError(err, want)
		}
		var names []string
		for _, artifact := range list {
			names = append(names, artifact.GetName())
		}
		return checkNames(names, want, "artifacts")
	case s.DeleteArtifact != nil:
		if err := artifacts.Delete(ctx, s.DeleteArtifact.ID); err != nil {
			return checkCallError(err, want)
		}
		return noErrorExpected(want)
	case s.ListDependencies != nil:
		deps, err := session.Deps().List(ctx)
		return checkDependencies(deps, err, want)
	case s.AddDependency != nil:
		added, err := session.Deps().Add(ctx, s.AddDependency.Package)
		return checkDependencies(added.GetDependencies(), err, want)
	case s.PlaintextClient != nil:
		return checkPlaintextClient(s.PlaintextClient.Target, token, want)
	case s.Execute != nil:
		o := execute(ctx, client, session, s)
		err := checkExecute(o, want, state, 0)
		if o.execution != "" {
			state.lastExecution, state.lastEvents = o.execution, o.events
		}
		return err
	case s.AttachExecution != nil:
		name := state.lastExecution
		if id := s.AttachExecution.ExecutionID; id != "" {
			name = session.Name() + "/executions/" + id
		}
		after := s.AttachExecution.AfterSequence
		// The Go way to attach: range over the same iterator type Stream returns.
		o := observe(ctx, client, client.AttachExecution(ctx, name, after), nil, func() {})
		return checkExecute(o, want, state, after)
	case s.CancelExecution != nil:
		cancelled, err := client.CancelExecution(ctx, state.lastExecution)
		if err != nil {
			return checkCallError(err, want)
		}
		if err := noErrorExpected(want); err != nil {
			return err
		}
		if want.ExecutionCancelled != nil && cancelled != *want.ExecutionCancelled {
			return fmt.Errorf("cancelled %v, want %v", cancelled, *want.ExecutionCancelled)
		}
		return nil
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
		page, err := skills.Search(ctx, s.SearchSkills.Query, 0, "")
		if err != nil {
			return checkCallError(err, want)
		}
		var names []string
		for _, hit := range page.GetResults() {
			names = append(names, hit.GetSkill().GetName())
		}
		return checkNames(names, want, "search results")
	case s.CloseSession != nil:
		return session.Close()
	case s.DeleteSkill != nil:
		if err := skills.Delete(ctx, s.DeleteSkill.ID); err != nil {
			return checkCallError(err, want)
		}
		return noErrorExpected(want)
	}
	return fmt.Errorf("unknown step %+v", s)
}

func execute(ctx context.Context, client *codemode.Client, session *codemode.Session, s step) *observed {
	spec := s.Execute
	name := spec.Session
	if name == "" {
		name = session.Name()
	}
	handle := client.Session(name)
	var opts []codemode.RunOption
	if spec.ExecutionTimeoutSecond != nil {
		opts = append(opts, codemode.WithTimeout(time.Duration(*spec.ExecutionTimeoutSecond*float64(time.Second))))
	}
	if spec.RequestID != "" {
		opts = append(opts, codemode.WithRequestID(spec.RequestID))
	}
	giveUp := time.Now().Add(retryWhileBusy)
	for {
		callCtx, cancel := ctx, context.CancelFunc(func() {})
		if spec.CallDeadlineSeconds != nil {
			// The Go way to set a deadline: the context's.
			callCtx, cancel = context.WithTimeout(ctx, time.Duration(*spec.CallDeadlineSeconds*float64(time.Second)))
		}
		o := executeOnce(callCtx, client, handle, spec, opts)
		cancel()
		if spec.RetryWhileBusy && codemode.Reason(o.callErr) == "SESSION_BUSY" && time.Now().Before(giveUp) {
			time.Sleep(100 * time.Millisecond)
			continue
		}
		return o
	}
}

func executeOnce(ctx context.Context, client *codemode.Client, session *codemode.Session, spec *executeSpec, opts []codemode.RunOption) *observed {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	return observe(ctx, client, session.Stream(ctx, spec.Code, opts...), spec, cancel)
}

// observe reads an execution stream (Execute or AttachExecution) to its end;
// spec, for an execute step, says what to do mid-stream.
func observe(ctx context.Context, client *codemode.Client, events iter.Seq2[*codemodev1.ExecuteResponse, error], spec *executeSpec, cancel context.CancelFunc) *observed {
	o := &observed{outputsBeforeResult: -1}
	if spec == nil {
		spec = &executeSpec{}
	}
	var lastSequence int64
	for event, err := range events {
		if err != nil {
			o.callErr = err
			break
		}
		now := time.Now()
		// Any event, a heartbeat too, carries the sequence to resume after.
		lastSequence = event.GetSequence()
		if event.GetHeartbeat() == nil {
			o.events = append(o.events, signed{event.GetSequence(), signature(event)})
		}
		switch e := event.GetEvent().(type) {
		case *codemodev1.ExecuteResponse_Started:
			o.execution = e.Started.GetExecution()
		case *codemodev1.ExecuteResponse_Output:
			o.outputs = append(o.outputs, e.Output)
			if o.firstOutputAt.IsZero() {
				o.firstOutputAt = now
			}
			if spec.CancelAfterFirstOutput && !o.cancelled {
				// The Go way to cancel: cancel the context; the stream then
				// ends with a CANCELLED error.
				o.cancelled = true
				cancel()
			}
			if spec.CancelExecutionAfterFirstOutput && len(o.outputs) == 1 {
				if _, err := client.CancelExecution(ctx, o.execution); err != nil {
					o.sideErr = fmt.Errorf("CancelExecution: %w", err)
				}
			}
			if spec.AttachAfterOutputs > 0 && len(o.outputs) == spec.AttachAfterOutputs {
				// A second stream on the same execution while this one stays open.
				o.attachedAfter = lastSequence
				for attached, err := range client.AttachExecution(ctx, o.execution, lastSequence) {
					if err != nil {
						o.sideErr = fmt.Errorf("AttachExecution: %w", err)
						break
					}
					if attached.GetHeartbeat() == nil {
						o.attached = append(o.attached, signed{attached.GetSequence(), signature(attached)})
					}
				}
			}
		case *codemodev1.ExecuteResponse_Result:
			o.result = e.Result
			o.outputsBeforeResult = len(o.outputs)
		case *codemodev1.ExecuteResponse_Error:
			o.execError = e.Error
		case *codemodev1.ExecuteResponse_Finished:
			o.finished, o.finishedAt = e.Finished, now
		}
	}
	return o
}

// checkContiguous: sequences after+1, after+2, ... with no gap or repeat.
func checkContiguous(events []signed, after int64) error {
	for i, event := range events {
		if want := after + int64(i) + 1; event.sequence != want {
			return fmt.Errorf("event %d has sequence %d, want %d (%v)", i, event.sequence, want, events)
		}
	}
	return nil
}

// checkSameEvents: got has the signatures of the events of want above after.
func checkSameEvents(got, want []signed, after int64) error {
	var tail []signed
	for _, event := range want {
		if event.sequence > after {
			tail = append(tail, event)
		}
	}
	if !reflect.DeepEqual(got, tail) {
		return fmt.Errorf("events %v, want %v", got, tail)
	}
	return nil
}

func checkCallError(err error, want expectation) error {
	if want.ErrorStatus == nil {
		return fmt.Errorf("unexpected call failure: %w", err)
	}
	if got := codeName(codemode.Code(err)); got != want.ErrorStatus.Code {
		return fmt.Errorf("status %s, want %s (%v)", got, want.ErrorStatus.Code, err)
	}
	if want.ErrorStatus.Reason != nil && reason(err) != *want.ErrorStatus.Reason {
		return fmt.Errorf("reason %q, want %q (%v)", reason(err), *want.ErrorStatus.Reason, err)
	}
	if want.ErrorStatus.RetryDelaySeconds == nil && want.ErrorStatus.FieldViolation == nil {
		return nil
	}
	// The client's typed error, not the raw status: RetryInfo and BadRequest as it decodes them.
	var typed *codemode.Error
	if !errors.As(err, &typed) {
		return fmt.Errorf("%T is not a *codemode.Error (%v)", err, err)
	}
	if wantDelay := want.ErrorStatus.RetryDelaySeconds; wantDelay != nil {
		if typed.RetryDelay == 0 {
			return fmt.Errorf("no retry delay (RetryInfo) in %v", err)
		}
		if d := time.Duration(math.Round(*wantDelay * float64(time.Second))); typed.RetryDelay != d {
			return fmt.Errorf("retry delay %s, want %s", typed.RetryDelay, d)
		}
	}
	if wantField := want.ErrorStatus.FieldViolation; wantField != nil {
		var fields []string
		for _, violation := range typed.FieldViolations {
			fields = append(fields, violation.GetField())
		}
		if !contains(fields, *wantField) {
			return fmt.Errorf("field violations %q lack %q (%v)", fields, *wantField, err)
		}
	}
	return nil
}

// reason is codemode.Reason, also for the plain status errors of the
// generated stubs the session steps call.
func reason(err error) string {
	if r := codemode.Reason(err); r != "" {
		return r
	}
	for _, detail := range status.Convert(err).Details() {
		if info, ok := detail.(*errdetails.ErrorInfo); ok && info.GetDomain() == codemode.ErrorDomain {
			return strings.TrimPrefix(info.GetReason(), "ERROR_REASON_")
		}
	}
	return ""
}

func noErrorExpected(want expectation) error {
	if want.ErrorStatus != nil {
		return fmt.Errorf("expected %s, the call succeeded", want.ErrorStatus.Code)
	}
	return nil
}

func checkNames(names []string, want expectation, what string) error {
	if err := noErrorExpected(want); err != nil {
		return err
	}
	if want.ContainsName != "" && !contains(names, want.ContainsName) {
		return fmt.Errorf("%s not in %s %v", want.ContainsName, what, names)
	}
	if want.LacksName != "" && contains(names, want.LacksName) {
		return fmt.Errorf("%s in %s %v", want.LacksName, what, names)
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

func checkArtifact(artifact *codemodev1.Artifact, err error, want expectation) error {
	if err != nil {
		return checkCallError(err, want)
	}
	if want.ErrorStatus != nil {
		return fmt.Errorf("expected %s, the call succeeded", want.ErrorStatus.Code)
	}
	a := want.Artifact
	if a == nil {
		return nil
	}
	typeName := strings.TrimPrefix(artifact.GetType().String(), "ARTIFACT_TYPE_")
	switch {
	case a.Name != nil && artifact.GetName() != *a.Name:
		return fmt.Errorf("artifact name %q, want %q", artifact.GetName(), *a.Name)
	case a.Type != nil && typeName != *a.Type:
		return fmt.Errorf("artifact type %s, want %s", typeName, *a.Type)
	case a.Description != nil && artifact.GetDescription() != *a.Description:
		return fmt.Errorf("artifact description %q, want %q", artifact.GetDescription(), *a.Description)
	case a.SizeBytes != nil && artifact.GetSizeBytes() != *a.SizeBytes:
		return fmt.Errorf("artifact size_bytes %d, want %d", artifact.GetSizeBytes(), *a.SizeBytes)
	case a.Sha256 != nil && artifact.GetSha256() != *a.Sha256:
		return fmt.Errorf("artifact sha256 %s, want %s", artifact.GetSha256(), *a.Sha256)
	}
	return nil
}

func checkDownloaded(artifact *codemodev1.Artifact, data []byte, want expectation) error {
	if want.DataSha256 != "" {
		sum := sha256.Sum256(data)
		digest := hex.EncodeToString(sum[:])
		if digest != want.DataSha256 {
			return fmt.Errorf("downloaded %d bytes with sha256 %s", len(data), digest)
		}
		if artifact.GetSha256() != digest {
			return fmt.Errorf("artifact sha256 %s differs from the data's %s", artifact.GetSha256(), digest)
		}
	}
	if want.DataJSON != nil {
		var got, expected any
		if err := json.Unmarshal(data, &got); err != nil {
			return fmt.Errorf("downloaded data is not JSON: %w", err)
		}
		_ = json.Unmarshal(*want.DataJSON, &expected)
		if !reflect.DeepEqual(got, expected) {
			return fmt.Errorf("downloaded %s, want %s", data, string(*want.DataJSON))
		}
	}
	return nil
}

func checkDependencies(deps []string, err error, want expectation) error {
	if err != nil {
		return checkCallError(err, want)
	}
	if want.ErrorStatus != nil {
		return fmt.Errorf("expected %s, the call succeeded", want.ErrorStatus.Code)
	}
	if want.Dependencies != nil && !reflect.DeepEqual(deps, want.Dependencies) {
		return fmt.Errorf("dependencies %v, want %v", deps, want.Dependencies)
	}
	return nil
}

func checkPlaintextClient(target, token string, want expectation) error {
	client, err := codemode.Dial(target, codemode.WithInsecure(), codemode.WithToken(token))
	if err != nil {
		if want.RefusedContains == "" {
			return fmt.Errorf("plaintext client to %s refused: %w", target, err)
		}
		if !strings.Contains(err.Error(), want.RefusedContains) {
			return fmt.Errorf("refusal %q lacks %q", err.Error(), want.RefusedContains)
		}
		return nil
	}
	client.Close()
	if want.RefusedContains != "" {
		return fmt.Errorf("a plaintext client with a token to %s was allowed", target)
	}
	return nil
}

func streamName(s codemodev1.OutputStream) string {
	if s == codemodev1.OutputStream_OUTPUT_STREAM_STDERR {
		return "stderr"
	}
	return "stdout"
}

func checkExecute(o *observed, want expectation, state *caseState, after int64) error {
	if o.sideErr != nil {
		return o.sideErr
	}
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
	if want.OutputsBeforeResult != nil {
		if o.outputsBeforeResult < 0 {
			return errors.New("no result event")
		}
		if o.outputsBeforeResult < *want.OutputsBeforeResult {
			return fmt.Errorf("only %d output events before the result", o.outputsBeforeResult)
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
		var received, reported int64
		for _, out := range o.outputs {
			if streamName(out.GetStream()) == tr.Stream {
				received += int64(len(out.GetData()))
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
	if want.ContiguousSequences {
		if err := checkContiguous(o.events, after); err != nil {
			return err
		}
	}
	if want.SameEventsAsLast {
		if state.lastExecution == "" {
			return errors.New("no earlier execution to compare with")
		}
		if err := checkSameEvents(o.events, state.lastEvents, after); err != nil {
			return err
		}
	}
	if want.AttachMatchesStream {
		if len(o.attached) == 0 {
			return errors.New("the attached stream had no events")
		}
		if err := checkContiguous(o.attached, o.attachedAfter); err != nil {
			return fmt.Errorf("attached stream: %w", err)
		}
		if err := checkSameEvents(o.attached, o.events, o.attachedAfter); err != nil {
			return fmt.Errorf("attached stream: %w", err)
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
