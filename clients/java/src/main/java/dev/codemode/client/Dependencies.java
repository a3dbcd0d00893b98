package dev.codemode.client;

import dev.codemode.v1.AddDependencyRequest;
import dev.codemode.v1.AddDependencyResponse;
import dev.codemode.v1.DependencyServiceGrpc;
import dev.codemode.v1.ListDependenciesRequest;
import dev.codemode.v1.RemoveDependencyRequest;
import dev.codemode.v1.RemoveDependencyResponse;
import dev.codemode.v1.SyncDependenciesRequest;
import dev.codemode.v1.SyncDependenciesResponse;
import io.grpc.StatusRuntimeException;
import java.util.List;
import java.util.function.Supplier;

/**
 * A session's Python packages: the API twin of the {@code deps} namespace in sandboxed code.
 * Packages come from the server's configured index or wheelhouse, never from URLs. {@code add}
 * and {@code sync} run pip on the server (bounded there by --deps-install-timeout, 5 minutes by
 * default): a deadline on them must be longer than that.
 */
public final class Dependencies {
  private final DependencyServiceGrpc.DependencyServiceBlockingStub stub;
  private final String session;

  Dependencies(DependencyServiceGrpc.DependencyServiceBlockingStub stub, String session) {
    this.stub = stub;
    this.session = session;
  }

  /**
   * Installs a requirement such as "pandas>=2.0"; importable at once. FAILED_PRECONDITION
   * (RUNTIME_DEPS_DISABLED) unless the session allows runtime deps.
   */
  public AddDependencyResponse add(String pkg) {
    return call(
        () -> stub.addDependency(AddDependencyRequest.newBuilder().setSession(session).setPackage(pkg).build()));
  }

  /** Drops a package (matched by name) from the configured set; its files stay until the sandbox ends. */
  public RemoveDependencyResponse remove(String pkg) {
    return call(
        () ->
            stub.removeDependency(
                RemoveDependencyRequest.newBuilder().setSession(session).setPackage(pkg).build()));
  }

  /** The configured packages as normalized specifiers; always allowed. */
  public List<String> list() {
    return call(
        () ->
            stub.listDependencies(ListDependenciesRequest.newBuilder().setSession(session).build())
                .getDependenciesList());
  }

  /** Installs every configured package that is missing; always allowed. */
  public SyncDependenciesResponse sync() {
    return call(() -> stub.syncDependencies(SyncDependenciesRequest.newBuilder().setSession(session).build()));
  }

  private static <T> T call(Supplier<T> rpc) {
    try {
      return rpc.get();
    } catch (StatusRuntimeException e) {
      throw CodemodeException.from(e);
    }
  }
}
