package codemode

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"

	codemodev1 "github.com/codemode-dev/codemode/clients/go/gen/codemode/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
)

// Client is a connection to a codemode server. It is safe for concurrent
// use; create one per server and share it.
type Client struct {
	conn      *grpc.ClientConn
	sessions  codemodev1.SessionServiceClient
	execute   codemodev1.ExecuteServiceClient
	skills    codemodev1.SkillStoreServiceClient
	artifacts codemodev1.ArtifactServiceClient
	deps      codemodev1.DependencyServiceClient
}

type options struct {
	token              string
	tlsConfig          *tls.Config
	insecure           bool
	allowInsecureToken bool
	dialOptions        []grpc.DialOption
	tlsErr             error
}

// Option configures Dial.
type Option func(*options)

// WithToken sends "authorization: Bearer <token>" on every call.
func WithToken(token string) Option {
	return func(o *options) { o.token = token }
}

// WithInsecure uses plaintext HTTP/2. Only for loopback or a trusted
// network: with a token, Dial refuses any target that is not loopback or a
// unix socket, unless WithAllowInsecureToken is given too.
func WithInsecure() Option {
	return func(o *options) { o.insecure = true }
}

// WithAllowInsecureToken lets WithInsecure send the token to a remote host,
// for a trusted private network (a service mesh sidecar, say) where anyone
// on the path may read it.
func WithAllowInsecureToken() Option {
	return func(o *options) { o.allowInsecureToken = true }
}

// WithTLSConfig uses the given TLS configuration as-is.
func WithTLSConfig(cfg *tls.Config) Option {
	return func(o *options) { o.tlsConfig = cfg }
}

// WithTLSFiles configures TLS from PEM files: caFile verifies the server
// (empty means the system roots); certFile and keyFile, when both set, are
// the client certificate for mTLS. With WithToken as well, the call carries
// both credentials.
func WithTLSFiles(caFile, certFile, keyFile string) Option {
	return func(o *options) {
		cfg, err := tlsFromFiles(caFile, certFile, keyFile)
		o.tlsConfig, o.tlsErr = cfg, err
	}
}

// WithDialOptions passes extra options to grpc.NewClient (interceptors,
// OpenTelemetry stats handlers, keepalive, ...).
func WithDialOptions(opts ...grpc.DialOption) Option {
	return func(o *options) { o.dialOptions = append(o.dialOptions, opts...) }
}

// Dial connects to target (e.g. "127.0.0.1:50051" or "dns:///codemode:443").
// Without WithInsecure the connection uses TLS with the system roots.
// Like grpc.NewClient it does not block: connection errors surface on the
// first call.
func Dial(target string, opts ...Option) (*Client, error) {
	o := options{}
	for _, opt := range opts {
		opt(&o)
	}
	if o.tlsErr != nil {
		return nil, o.tlsErr
	}
	if o.insecure && o.tlsConfig != nil {
		return nil, errors.New("codemode: WithInsecure and a TLS configuration are mutually exclusive")
	}
	if o.insecure && o.token != "" && !o.allowInsecureToken && !isLocalTarget(target) {
		return nil, plaintextTokenError(target)
	}
	dial := []grpc.DialOption{}
	if o.insecure {
		dial = append(dial, grpc.WithTransportCredentials(insecure.NewCredentials()))
	} else {
		cfg := o.tlsConfig
		if cfg == nil {
			cfg = &tls.Config{MinVersion: tls.VersionTLS12}
		}
		dial = append(dial, grpc.WithTransportCredentials(credentials.NewTLS(cfg)))
	}
	if o.token != "" {
		dial = append(dial, grpc.WithPerRPCCredentials(bearerToken{token: o.token, requireTLS: !o.insecure}))
	}
	dial = append(dial, o.dialOptions...)
	conn, err := grpc.NewClient(target, dial...)
	if err != nil {
		return nil, fmt.Errorf("codemode: dial %s: %w", target, err)
	}
	return NewClientFromConn(conn), nil
}

// NewClientFromConn wraps an existing connection; Close then closes it.
func NewClientFromConn(conn *grpc.ClientConn) *Client {
	return &Client{
		conn:      conn,
		sessions:  codemodev1.NewSessionServiceClient(conn),
		execute:   codemodev1.NewExecuteServiceClient(conn),
		skills:    codemodev1.NewSkillStoreServiceClient(conn),
		artifacts: codemodev1.NewArtifactServiceClient(conn),
		deps:      codemodev1.NewDependencyServiceClient(conn),
	}
}

// Close closes the connection. Sessions stay alive on the server until
// deleted or expired.
func (c *Client) Close() error { return c.conn.Close() }

// Conn exposes the underlying connection, for the generated stubs' options
// this package does not wrap.
func (c *Client) Conn() *grpc.ClientConn { return c.conn }

// Skills returns a tenant's skill library. An empty tenant means the
// caller's own (an operator's: the server's default tenant); only an
// operator may name another.
func (c *Client) Skills(tenant string) *Skills {
	return &Skills{client: c.skills, tenant: tenant}
}

// Artifacts returns a tenant's artifact store. An empty tenant means the
// caller's own (an operator's: the server's default tenant); only an
// operator may name another.
func (c *Client) Artifacts(tenant string) *Artifacts {
	return &Artifacts{client: c.artifacts, tenant: tenant}
}

// CreateSession admits a session and, unless NoWait is given, waits (with
// WaitSession, bounded by ctx) until it is READY. config may be nil (server
// defaults); its optional fields left nil take the server's defaults, and a
// set one is honoured or refused, e.g. AllowRuntimeDeps: proto.Bool(false).
// A session that ends FAILED is deleted and reported as an *Error whose
// Session field holds it: Reason SANDBOX_START_FAILED (Code Unavailable), or
// DEPS_INSTALL_FAILED (FailedPrecondition) when its start-up deps
// (sync_deps_on_start) failed; Message is its state_message. Call Close on
// the session when done.
func (c *Client) CreateSession(ctx context.Context, config *codemodev1.SessionConfig, opts ...WaitOption) (*Session, error) {
	resp, err := c.sessions.CreateSession(ctx, &codemodev1.CreateSessionRequest{
		Session: &codemodev1.Session{Config: config},
	})
	if err != nil {
		return nil, wrapError(err)
	}
	info := resp.GetSession()
	session := &Session{client: c, name: info.GetName(), info: info}
	if !waitWanted(opts) {
		return session, nil
	}
	if session.info, err = c.waitSettled(ctx, info); err == nil {
		err = settledError(session.info, false)
	}
	if err != nil {
		// The caller gets no handle, so nothing else would delete it.
		_ = session.Close()
		return nil, err
	}
	return session, nil
}

// Session returns a handle to an existing session ("sessions/{id}") without
// calling the server.
func (c *Client) Session(name string) *Session {
	return &Session{client: c, name: name}
}

type bearerToken struct {
	token      string
	requireTLS bool
}

func (b bearerToken) GetRequestMetadata(context.Context, ...string) (map[string]string, error) {
	return map[string]string{"authorization": "Bearer " + b.token}, nil
}

func (b bearerToken) RequireTransportSecurity() bool { return b.requireTLS }

func tlsFromFiles(caFile, certFile, keyFile string) (*tls.Config, error) {
	cfg := &tls.Config{MinVersion: tls.VersionTLS12}
	if caFile != "" {
		pem, err := os.ReadFile(caFile)
		if err != nil {
			return nil, fmt.Errorf("codemode: read CA: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("codemode: no certificate in %s", caFile)
		}
		cfg.RootCAs = pool
	}
	if (certFile == "") != (keyFile == "") {
		return nil, errors.New("codemode: a client certificate needs both certFile and keyFile")
	}
	if certFile != "" {
		pair, err := tls.LoadX509KeyPair(certFile, keyFile)
		if err != nil {
			return nil, fmt.Errorf("codemode: load client certificate: %w", err)
		}
		cfg.Certificates = []tls.Certificate{pair}
	}
	return cfg, nil
}
