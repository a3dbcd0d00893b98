package codemode

import (
	"context"

	codemodev1 "github.com/codemode-dev/codemode/clients/go/gen/codemode/v1"
)

// Dependencies are a session's Python packages: the API twin of the `deps`
// namespace in sandboxed code. Packages come from the server's configured
// index or wheelhouse, never from URLs. Add and Sync run pip on the server
// (bounded there by --deps-install-timeout, 5 minutes by default), so give
// their context a deadline longer than that.
type Dependencies struct {
	client  codemodev1.DependencyServiceClient
	session string
}

// Deps returns the session's dependencies.
func (s *Session) Deps() *Dependencies {
	return &Dependencies{client: s.client.deps, session: s.name}
}

// Add installs a requirement such as "pandas>=2.0"; the session's
// interpreter can import it at once. FAILED_PRECONDITION with
// ReasonRuntimeDepsDisabled unless the session allows runtime deps.
func (d *Dependencies) Add(ctx context.Context, pkg string) (*codemodev1.AddDependencyResponse, error) {
	resp, err := d.client.AddDependency(ctx, &codemodev1.AddDependencyRequest{Session: d.session, Package: pkg})
	return resp, wrapError(err)
}

// Remove drops a package (matched by name) from the configured set; its
// files stay until the sandbox ends. Same precondition as Add.
func (d *Dependencies) Remove(ctx context.Context, pkg string) (*codemodev1.RemoveDependencyResponse, error) {
	resp, err := d.client.RemoveDependency(ctx, &codemodev1.RemoveDependencyRequest{Session: d.session, Package: pkg})
	return resp, wrapError(err)
}

// List returns the configured packages as normalized specifiers; always allowed.
func (d *Dependencies) List(ctx context.Context) ([]string, error) {
	resp, err := d.client.ListDependencies(ctx, &codemodev1.ListDependenciesRequest{Session: d.session})
	return resp.GetDependencies(), wrapError(err)
}

// Sync installs every configured package that is missing; always allowed.
func (d *Dependencies) Sync(ctx context.Context) (*codemodev1.SyncDependenciesResponse, error) {
	resp, err := d.client.SyncDependencies(ctx, &codemodev1.SyncDependenciesRequest{Session: d.session})
	return resp, wrapError(err)
}
