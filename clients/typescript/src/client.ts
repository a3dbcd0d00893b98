import { createClient, type Client, type Interceptor, type Transport } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import type { MessageInitShape } from "@bufbuild/protobuf";
import { ExecuteService } from "./gen/codemode/v1/execute_pb.js";
import { SessionService, type SessionConfigSchema } from "./gen/codemode/v1/session_pb.js";
import { SkillStoreService } from "./gen/codemode/v1/skill_pb.js";
import { toCodemodeError } from "./errors.js";
import { Session } from "./session.js";
import { Skills } from "./skills.js";

/** TLS settings; PEM contents, not paths, so callers choose how to load them. */
export interface TlsOptions {
  /** CA that signed the server certificate; omitted means Node's default roots. */
  ca?: string | Buffer;
  /** Client certificate and key for mTLS. */
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
   * networks only: the token then travels unencrypted). Default: TLS with
   * Node's default roots.
   */
  tls?: TlsOptions | false;
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
 * A connection to a codemode server; share one per server. Uses connect-node's
 * gRPC transport: plain gRPC over Node's http2 module, pure JavaScript, with
 * the generated service descriptors used directly (no second codegen step).
 */
export class CodemodeClient {
  readonly sessionService: Client<typeof SessionService>;
  readonly executeService: Client<typeof ExecuteService>;
  readonly skillStoreService: Client<typeof SkillStoreService>;
  readonly transport: Transport;

  /** @param target "host:port", e.g. "127.0.0.1:50051". */
  constructor(target: string, options: ConnectOptions = {}) {
    const interceptors = [...(options.interceptors ?? [])];
    if (options.token) interceptors.unshift(bearerToken(options.token));
    const tls = options.tls === false ? undefined : options.tls ?? {};
    this.transport = createGrpcTransport({
      baseUrl: `${tls ? "https" : "http"}://${target}`,
      interceptors,
      nodeOptions: tls ? { ca: tls.ca, cert: tls.cert, key: tls.key, servername: tls.servername } : undefined,
    });
    this.sessionService = createClient(SessionService, this.transport);
    this.executeService = createClient(ExecuteService, this.transport);
    this.skillStoreService = createClient(SkillStoreService, this.transport);
  }

  /** Starts a sandbox and resolves once it is ready. Close it (or `await using`) when done. */
  async createSession(
    config?: MessageInitShape<typeof SessionConfigSchema>,
    options: CallOptions = {},
  ): Promise<Session> {
    try {
      const response = await this.sessionService.createSession({ session: { config } }, options);
      return new Session(this, response.session!.name, response.session);
    } catch (error) {
      throw toCodemodeError(error);
    }
  }

  /** A handle to an existing session ("sessions/{id}"), without calling the server. */
  session(name: string): Session {
    return new Session(this, name);
  }

  /** The tenant's skill library; "" means the server's default tenant. */
  skills(tenant = ""): Skills {
    return new Skills(this.skillStoreService, tenant);
  }
}

function bearerToken(token: string): Interceptor {
  return (next) => async (request) => {
    request.header.set("authorization", `Bearer ${token}`);
    return next(request);
  };
}
