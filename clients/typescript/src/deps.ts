import type { AddDependencyResponse, RemoveDependencyResponse, SyncDependenciesResponse } from "./gen/codemode/v1/dependency_pb.js";
import type { Session as SessionInfo } from "./gen/codemode/v1/session_pb.js";
import { Session_State } from "./gen/codemode/v1/session_pb.js";
import type { CallOptions, CodemodeClient } from "./client.js";
import { call } from "./errors.js";
import { deadlineOf, settledError, waitSettled, type WaitOptions } from "./wait.js";

/**
 * A session's Python packages: the API twin of the `deps` namespace in
 * sandboxed code. Packages come from the server's configured index or
 * wheelhouse, never from URLs. `add` and `sync` start pip on the server and
 * return at once; unless `wait: false` they then wait (WaitSession) until the
 * install ended, so a `timeoutMs` on them must be longer than the server's
 * --deps-install-timeout (5 minutes by default), or absent.
 */
export class Dependencies {
  constructor(
    private readonly client: CodemodeClient,
    /** "sessions/{id}" */
    private readonly session: string,
  ) {}

  /**
   * Records a requirement such as "pandas>=2.0" and installs it; once this
   * resolves (without `wait: false`) the session can import it, and the
   * response's `session` is the session after the install. A failed install
   * rejects with a CodemodeError: FAILED_PRECONDITION, reason
   * DEPS_INSTALL_FAILED, the install's error message, and `session`.
   * FAILED_PRECONDITION (RUNTIME_DEPS_DISABLED) unless the session allows
   * runtime deps; SESSION_BUSY while code or another install runs.
   */
  async add(pkg: string, options: WaitOptions = {}): Promise<AddDependencyResponse> {
    const deadline = deadlineOf(options);
    const response = await call(() => this.client.dependencyService.addDependency({ session: this.session, package: pkg }, options));
    if (options.wait === false || response.alreadyPresent) return response;
    response.session = await this.settle(response.session, options, deadline);
    return response;
  }

  /** Drops a package (matched by name) from the configured set; its files stay until the sandbox ends. */
  async remove(pkg: string, options: CallOptions = {}): Promise<RemoveDependencyResponse> {
    return call(() => this.client.dependencyService.removeDependency({ session: this.session, package: pkg }, options));
  }

  /** The configured packages as normalized specifiers, in the order they were added, every page; always allowed. */
  async list(options: CallOptions = {}): Promise<string[]> {
    return call(async () => {
      const all: string[] = [];
      let pageToken = "";
      do {
        const page = await this.client.dependencyService.listDependencies({ session: this.session, pageToken }, options);
        all.push(...page.dependencies);
        pageToken = page.nextPageToken;
      } while (pageToken);
      return all;
    });
  }

  /**
   * Installs every configured package that is missing (the response's
   * `missing`; none: nothing to do) and, unless `wait: false`, waits as `add`
   * does, with the same error for a failed install; always allowed.
   */
  async sync(options: WaitOptions = {}): Promise<SyncDependenciesResponse> {
    const deadline = deadlineOf(options);
    const response = await call(() => this.client.dependencyService.syncDependencies({ session: this.session }, options));
    if (options.wait === false || response.missing.length === 0) return response;
    response.session = await this.settle(response.session, options, deadline);
    return response;
  }

  /** Waits for the install the call started and rejects when it failed. */
  private async settle(session: SessionInfo | undefined, options: WaitOptions, deadline: number | undefined): Promise<SessionInfo> {
    const pending = session ?? ({ name: this.session, state: Session_State.INSTALLING } as SessionInfo);
    const settled = await waitSettled(this.client, pending, options, deadline);
    const failure = settledError(settled, true);
    if (failure) throw failure;
    return settled;
  }
}
