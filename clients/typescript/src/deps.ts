import type { Client } from "@connectrpc/connect";
import {
  DependencyService,
  type AddDependencyResponse,
  type RemoveDependencyResponse,
  type SyncDependenciesResponse,
} from "./gen/codemode/v1/dependency_pb.js";
import type { CallOptions } from "./client.js";
import { call } from "./errors.js";

/**
 * A session's Python packages: the API twin of the `deps` namespace in
 * sandboxed code. Packages come from the server's configured index or
 * wheelhouse, never from URLs. `add` and `sync` run pip on the server
 * (bounded there by --deps-install-timeout, 5 minutes by default): give
 * them a `timeoutMs` longer than that, or none.
 */
export class Dependencies {
  constructor(
    private readonly client: Client<typeof DependencyService>,
    /** "sessions/{id}" */
    private readonly session: string,
  ) {}

  /**
   * Installs a requirement such as "pandas>=2.0"; importable at once.
   * FAILED_PRECONDITION (RUNTIME_DEPS_DISABLED) unless the session allows runtime deps.
   */
  async add(pkg: string, options: CallOptions = {}): Promise<AddDependencyResponse> {
    return call(() => this.client.addDependency({ session: this.session, package: pkg }, options));
  }

  /** Drops a package (matched by name) from the configured set; its files stay until the sandbox ends. */
  async remove(pkg: string, options: CallOptions = {}): Promise<RemoveDependencyResponse> {
    return call(() => this.client.removeDependency({ session: this.session, package: pkg }, options));
  }

  /** The configured packages as normalized specifiers; always allowed. */
  async list(options: CallOptions = {}): Promise<string[]> {
    return call(async () => (await this.client.listDependencies({ session: this.session }, options)).dependencies);
  }

  /** Installs every configured package that is missing; always allowed. */
  async sync(options: CallOptions = {}): Promise<SyncDependenciesResponse> {
    return call(() => this.client.syncDependencies({ session: this.session }, options));
  }
}
