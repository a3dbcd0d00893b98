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
import type { ExecuteResponse } from "./gen/codemode/v1/execute_pb.js";
import { isLocalTarget, plaintextTokenError } from "./plaintext.js";
import { executionEvents, Session } from "./session.js";
import { deadlineOf, settledError, waitSettled, type WaitOptions } from "./wait.js";
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

  /**
   * Admits a session and, unless `wait: false`, resolves once it is READY
   * (waiting with WaitSession; `timeoutMs` bounds the whole). Unset config
   * fields take the server's defaults; a set one is honoured or refused, e.g.
   * `{ allowRuntimeDeps: false }`. A session that ends FAILED is deleted and
   * reported as a CodemodeError carrying it in `session`: reason
   * SANDBOX_START_FAILED (UNAVAILABLE), or DEPS_INSTALL_FAILED
   * (FAILED_PRECONDITION) when its start-up deps failed; the message is its
   * state_message. Close the session (or `await using`) when done.
   */
  async createSession(
    config?: MessageInitShape<typeof SessionConfigSchema>,
    options: WaitOptions = {},
  ): Promise<Session> {
    const deadline = deadlineOf(options);
    const response = await call(() => this.sessionService.createSession({ session: { config } }, options));
    let info = response.session!;
    if (options.wait === false) return new Session(this, info.name, info);
    try {
      info = await waitSettled(this, info, options, deadline);
      const failure = settledError(info, false);
      if (failure) throw failure;
    } catch (error) {
      // The caller gets no handle, so nothing else would delete it.
      await new Session(this, info.name).close().catch(() => undefined);
      throw error;
    }
    return new Session(this, info.name, info);
  }

  /**
   * The events of an execution ("sessions/{s}/executions/{e}", from
   * ExecutionStarted) whose sequence is above `afterSequence` (0: from the
   * start): live while it runs, from the server's record after it ended, with
   * no gap and no duplicate. To resume a broken stream pass the last sequence
   * seen, whatever the event (a heartbeat carries the sequence before it).
   * The same events as `Session.stream`; leaving the loop only detaches, the
   * execution goes on. EXECUTION_NOT_FOUND, or OUT_OF_RANGE / EVENTS_EXPIRED
   * (metadata "firstAvailableSequence") when those events are gone.
   */
  attachExecution(execution: string, afterSequence: bigint | number = 0n, options: CallOptions = {}): AsyncGenerator<ExecuteResponse, void, undefined> {
    const request = { execution, afterSequence: BigInt(afterSequence) };
    return executionEvents((signal) => this.executeService.attachExecution(request, { signal, timeoutMs: options.timeoutMs }), options);
  }

  /**
   * Asks a running execution to stop and resolves at once; its stream then
   * ends with finished CANCELLED (the session stays BUSY until the code has
   * stopped). Resolves false when it had already ended (a no-op).
   */
  async cancelExecution(execution: string, options: CallOptions = {}): Promise<boolean> {
    return call(async () => (await this.executeService.cancelExecution({ execution }, options)).cancelled);
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
