import { Code, ConnectError, createClient, type Client, type Interceptor, type Transport } from "@connectrpc/connect";
import { createGrpcTransport, Http2SessionManager } from "@connectrpc/connect-node";
import type { MessageInitShape } from "@bufbuild/protobuf";
import { ArtifactService } from "./gen/codemode/v1/artifact_pb.js";
import { DependencyService } from "./gen/codemode/v1/dependency_pb.js";
import { ExecuteService } from "./gen/codemode/v1/execute_pb.js";
import { SessionService, type SessionConfigSchema } from "./gen/codemode/v1/session_pb.js";
import { SkillStoreService } from "./gen/codemode/v1/skill_pb.js";
import { Artifacts } from "./artifacts.js";
import { call } from "./errors.js";
import { isLocalTarget, plaintextTokenError } from "./plaintext.js";
import { Session } from "./session.js";
import { Skills } from "./skills.js";

/** TLS settings; PEM contents, not paths, so callers choose how to load them. */
export interface TlsOptions {
  /** CA that signed the server certificate; omitted means Node's default roots. */
  ca?: string | Buffer;
  /** Client certificate and key for mTLS (with or without a token). */
  cert?: string | Buffer;
  key?: string | Buffer;
  /** Expected server name when it differs from the target's host. */
  servername?: string;
}

export interface ConnectOptions {
  /** Sent as "authorization: Bearer <token>" on every call. */
  token?: string;
  /**
   * TLS settings, or `false` for plaintext HTTP/2 (loopback and trusted
   * networks only). Default: TLS with Node's default roots.
   */
  tls?: TlsOptions | false;
  /**
   * With `tls: false`, a token is only sent to loopback or a unix socket;
   * `true` allows any host, for a trusted private network where anyone on
   * the path may read it.
   */
  allowInsecureToken?: boolean;
  /** Extra connect interceptors (logging, tracing, ...). */
  interceptors?: Interceptor[];
}

export interface CallOptions {
  /** Aborting the signal cancels the call (CANCELLED). */
  signal?: AbortSignal;
  /** gRPC deadline for the call, in milliseconds (DEADLINE_EXCEEDED). */
  timeoutMs?: number;
}

/**
 * A connection to a codemode server; share one per server and `close()` it
 * (or `await using`) when done. Uses connect-node's gRPC transport: plain
 * gRPC over Node's http2 module, pure JavaScript, with the generated service
 * descriptors used directly (no second codegen step).
 */
export class CodemodeClient implements AsyncDisposable {
  readonly sessionService: Client<typeof SessionService>;
  readonly executeService: Client<typeof ExecuteService>;
  readonly skillStoreService: Client<typeof SkillStoreService>;
  readonly artifactService: Client<typeof ArtifactService>;
  readonly dependencyService: Client<typeof DependencyService>;
  readonly transport: Transport;
  /** Owned here rather than by the transport, so close() can end the connection. */
  private readonly connection: Http2SessionManager;
  private closed = false;

  /**
   * @param target "host:port", e.g. "127.0.0.1:50051".
   * @throws Error when a token would be sent in plaintext to a host that is not loopback.
   */
  constructor(target: string, options: ConnectOptions = {}) {
    if (options.tls === false && options.token && !options.allowInsecureToken && !isLocalTarget(target)) {
      throw plaintextTokenError(target);
    }
    const interceptors = [refuseWhenClosed(() => this.closed), ...(options.interceptors ?? [])];
    if (options.token) interceptors.splice(1, 0, bearerToken(options.token));
    const tls = options.tls === false ? undefined : options.tls ?? {};
    const baseUrl = `${tls ? "https" : "http"}://${target}`;
    this.connection = new Http2SessionManager(
      baseUrl,
      {},
      tls ? { ca: tls.ca, cert: tls.cert, key: tls.key, servername: tls.servername } : undefined,
    );
    this.transport = createGrpcTransport({ baseUrl, interceptors, sessionManager: this.connection });
    this.sessionService = createClient(SessionService, this.transport);
    this.executeService = createClient(ExecuteService, this.transport);
    this.skillStoreService = createClient(SkillStoreService, this.transport);
    this.artifactService = createClient(ArtifactService, this.transport);
    this.dependencyService = createClient(DependencyService, this.transport);
  }

  /** Starts a sandbox and resolves once it is ready. Close it (or `await using`) when done. */
  async createSession(
    config?: MessageInitShape<typeof SessionConfigSchema>,
    options: CallOptions = {},
  ): Promise<Session> {
    const response = await call(() => this.sessionService.createSession({ session: { config } }, options));
    return new Session(this, response.session!.name, response.session);
  }

  /** A handle to an existing session ("sessions/{id}"), without calling the server. */
  session(name: string): Session {
    return new Session(this, name);
  }

  /**
   * A tenant's skill library; "" means the caller's own (an operator's: the
   * server's default tenant). Only an operator may name another.
   */
  skills(tenant = ""): Skills {
    return new Skills(this.skillStoreService, tenant);
  }

  /** A tenant's artifact store; the tenant works as for `skills()`. */
  artifacts(tenant = ""): Artifacts {
    return new Artifacts(this.artifactService, tenant);
  }

  /**
   * Closes the connection: calls still running fail with CANCELLED, and so
   * does every later call. Sessions stay alive on the server until deleted
   * or expired. Idempotent.
   */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.connection.abort();
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }
}

function bearerToken(token: string): Interceptor {
  return (next) => async (request) => {
    request.header.set("authorization", `Bearer ${token}`);
    return next(request);
  };
}

/** A closed client must not quietly reconnect, as the session manager would. */
function refuseWhenClosed(isClosed: () => boolean): Interceptor {
  return (next) => async (request) => {
    if (isClosed()) throw new ConnectError("codemode: the client is closed", Code.Canceled);
    return next(request);
  };
}
