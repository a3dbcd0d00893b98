package dev.codemode.client;

import dev.codemode.v1.AddDependencyRequest;
import dev.codemode.v1.AddDependencyResponse;
import dev.codemode.v1.ListDependenciesRequest;
import dev.codemode.v1.ListDependenciesResponse;
import dev.codemode.v1.RemoveDependencyRequest;
import dev.codemode.v1.RemoveDependencyResponse;
import dev.codemode.v1.Session;
import dev.codemode.v1.SyncDependenciesRequest;
import dev.codemode.v1.SyncDependenciesResponse;
import io.grpc.StatusRuntimeException;
import java.util.ArrayList;
import java.util.List;
import java.util.function.Supplier;

/**
 * A session's Python packages: the API twin of the {@code deps} namespace in sandboxed code.
 * Packages come from the server's configured index or wheelhouse, never from URLs. {@code add}
 * and {@code sync} start pip on the server and return at once; by default they then wait
 * (WaitSession) until the install ended, so a deadline on them must be longer than the server's
 * --deps-install-timeout (5 minutes by default), or absent.
 */
public final class Dependencies {
  private final CodemodeClient client;
  private final String session;

  Dependencies(CodemodeClient client, String session) {
    this.client = client;
    this.session = session;
  }

  /**
   * Records a requirement such as "pandas>=2.0" and installs it; once this returns the session
   * can import it, and the response's session is the session after the install. A failed install
   * throws a {@link CodemodeException}: FAILED_PRECONDITION, reason DEPS_INSTALL_FAILED, the
   * install's error message, and {@link CodemodeException#session()}. FAILED_PRECONDITION
   * (RUNTIME_DEPS_DISABLED) unless the session allows runtime deps; SESSION_BUSY while code or
   * another install runs.
   */
  public AddDependencyResponse add(String pkg) {
    return add(pkg, true);
  }

  /** As {@link #add(String)}; with {@code wait} false it returns while the install runs. */
  public AddDependencyResponse add(String pkg, boolean wait) {
    AddDependencyResponse response =
        call(
            () ->
                client.deps.addDependency(
                    AddDependencyRequest.newBuilder().setSession(session).setPackage(pkg).build()));
    if (!wait || response.getAlreadyPresent()) {
      return response;
    }
    return response.toBuilder().setSession(settle(response.hasSession() ? response.getSession() : null)).build();
  }

  /** Drops a package (matched by name) from the configured set; its files stay until the sandbox ends. */
  public RemoveDependencyResponse remove(String pkg) {
    return call(
        () ->
            client.deps.removeDependency(
                RemoveDependencyRequest.newBuilder().setSession(session).setPackage(pkg).build()));
  }

  /** The configured packages as normalized specifiers, in the order they were added, every page; always allowed. */
  public List<String> list() {
    return call(
        () -> {
          List<String> all = new ArrayList<>();
          String token = "";
          do {
            ListDependenciesResponse page =
                client.deps.listDependencies(
                    ListDependenciesRequest.newBuilder().setSession(session).setPageToken(token).build());
            all.addAll(page.getDependenciesList());
            token = page.getNextPageToken();
          } while (!token.isEmpty());
          return all;
        });
  }

  /**
   * Installs every configured package that is missing (the response's missing list; empty:
   * nothing to do) and waits as {@link #add(String)} does, with the same error for a failed
   * install; always allowed.
   */
  public SyncDependenciesResponse sync() {
    return sync(true);
  }

  /** As {@link #sync()}; with {@code wait} false it returns while the install runs. */
  public SyncDependenciesResponse sync(boolean wait) {
    SyncDependenciesResponse response =
        call(() -> client.deps.syncDependencies(SyncDependenciesRequest.newBuilder().setSession(session).build()));
    if (!wait || response.getMissingCount() == 0) {
      return response;
    }
    return response.toBuilder().setSession(settle(response.hasSession() ? response.getSession() : null)).build();
  }

  /** Waits for the install the call started and throws when it failed. */
  private Session settle(Session pending) {
    if (pending == null) {
      pending = Session.newBuilder().setName(session).setState(Session.State.STATE_INSTALLING).build();
    }
    Session settled = SessionWaits.settle(client.sessions, pending);
    SessionWaits.check(settled, true);
    return settled;
  }

  private static <T> T call(Supplier<T> rpc) {
    try {
      return rpc.get();
    } catch (StatusRuntimeException e) {
      throw CodemodeException.from(e);
    }
  }
}
