package codemode

import (
	"context"

	codemodev1 "github.com/codemode-dev/codemode/clients/go/gen/codemode/v1"
	"google.golang.org/protobuf/proto"
)

// Dependencies are a session's Python packages: the API twin of the `deps`
// namespace in sandboxed code. Packages come from the server's configured
// index or wheelhouse, never from URLs. Add and Sync start pip on the server
// and return at once; unless NoWait is given they then wait (WaitSession,
// bounded by ctx) until the install ended, so give their context a deadline
// longer than the server's --deps-install-timeout (5 minutes by default), or
// none.
type Dependencies struct {
	client  *Client
	session string
}

// Deps returns the session's dependencies.
func (s *Session) Deps() *Dependencies {
	return &Dependencies{client: s.client, session: s.name}
}

// Add records a requirement such as "pandas>=2.0" and installs it; once Add
// returns (without NoWait), the session's interpreter can import it. The
// response's Session is the session after the install (its LastInstall says
// how it went). A failed install is an *Error with Code FailedPrecondition,
// Reason ReasonDepsInstallFailed and the install's error message. Refused
// with FAILED_PRECONDITION / ReasonRuntimeDepsDisabled unless the session
// allows runtime deps, SESSION_BUSY while code or another install runs.
func (d *Dependencies) Add(ctx context.Context, pkg string, opts ...WaitOption) (*codemodev1.AddDependencyResponse, error) {
	resp, err := d.client.deps.AddDependency(ctx, &codemodev1.AddDependencyRequest{Session: d.session, Package: pkg})
	if err != nil {
		return nil, wrapError(err)
	}
	if !waitWanted(opts) || resp.GetAlreadyPresent() {
		return resp, nil
	}
	session, err := d.settle(ctx, resp.GetSession())
	resp = proto.CloneOf(resp)
	resp.Session = session
	return resp, err
}

// Remove drops a package (matched by name) from the configured set; its
// files stay until the sandbox ends. Same precondition as Add.
func (d *Dependencies) Remove(ctx context.Context, pkg string) (*codemodev1.RemoveDependencyResponse, error) {
	resp, err := d.client.deps.RemoveDependency(ctx, &codemodev1.RemoveDependencyRequest{Session: d.session, Package: pkg})
	return resp, wrapError(err)
}

// List returns the configured packages as normalized specifiers, in the
// order they were added, following pagination; always allowed.
func (d *Dependencies) List(ctx context.Context) ([]string, error) {
	var all []string
	token := ""
	for {
		resp, err := d.client.deps.ListDependencies(ctx, &codemodev1.ListDependenciesRequest{Session: d.session, PageToken: token})
		if err != nil {
			return all, wrapError(err)
		}
		all = append(all, resp.GetDependencies()...)
		if token = resp.GetNextPageToken(); token == "" {
			return all, nil
		}
	}
}

// Sync installs every configured package that is missing (the response's
// Missing; none: nothing to do) and, without NoWait, waits as Add does, with
// the same error for a failed install; always allowed.
func (d *Dependencies) Sync(ctx context.Context, opts ...WaitOption) (*codemodev1.SyncDependenciesResponse, error) {
	resp, err := d.client.deps.SyncDependencies(ctx, &codemodev1.SyncDependenciesRequest{Session: d.session})
	if err != nil {
		return nil, wrapError(err)
	}
	if !waitWanted(opts) || len(resp.GetMissing()) == 0 {
		return resp, nil
	}
	session, err := d.settle(ctx, resp.GetSession())
	resp = proto.CloneOf(resp)
	resp.Session = session
	return resp, err
}

// settle waits for the install the call started and reports its failure.
func (d *Dependencies) settle(ctx context.Context, session *codemodev1.Session) (*codemodev1.Session, error) {
	if session == nil {
		session = &codemodev1.Session{Name: d.session, State: codemodev1.Session_STATE_INSTALLING}
	}
	session, err := d.client.waitSettled(ctx, session)
	if err != nil {
		return session, err
	}
	return session, settledError(session, true)
}
