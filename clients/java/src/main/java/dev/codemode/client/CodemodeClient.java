package dev.codemode.client;

import dev.codemode.v1.ArtifactServiceGrpc;
import dev.codemode.v1.AttachExecutionRequest;
import dev.codemode.v1.CancelExecutionRequest;
import dev.codemode.v1.CreateSessionRequest;
import dev.codemode.v1.DependencyServiceGrpc;
import dev.codemode.v1.ExecuteServiceGrpc;
import dev.codemode.v1.SessionConfig;
import dev.codemode.v1.SessionServiceGrpc;
import dev.codemode.v1.SkillStoreServiceGrpc;
import io.grpc.ChannelCredentials;
import io.grpc.ClientInterceptors;
import io.grpc.Deadline;
import io.grpc.Grpc;
import io.grpc.InsecureChannelCredentials;
import io.grpc.ManagedChannel;
import io.grpc.Metadata;
import io.grpc.StatusRuntimeException;
import io.grpc.TlsChannelCredentials;
import io.grpc.Channel;
import io.grpc.stub.MetadataUtils;
import java.io.ByteArrayInputStream;
import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.time.Duration;
import java.util.concurrent.TimeUnit;

/**
 * A connection to a codemode server; thread-safe, share one per server and close it when done.
 *
 * <p>Like grpc-java stubs, the client is immutable: {@link #withDeadline(Duration)} returns a view
 * sharing the channel whose calls carry a deadline, so a deadline is set where the work is
 * started and not hidden in global configuration.
 */
public final class CodemodeClient implements AutoCloseable {
  private static final Metadata.Key<String> AUTHORIZATION =
      Metadata.Key.of("authorization", Metadata.ASCII_STRING_MARSHALLER);

  private final ManagedChannel owned;
  final SessionServiceGrpc.SessionServiceBlockingStub sessions;
  final ExecuteServiceGrpc.ExecuteServiceBlockingStub execute;
  final SkillStoreServiceGrpc.SkillStoreServiceBlockingStub skills;
  final ArtifactServiceGrpc.ArtifactServiceBlockingStub artifacts;
  /** Client streaming (uploads) needs the async stub; Artifacts drives it with flow control. */
  final ArtifactServiceGrpc.ArtifactServiceStub artifactsAsync;
  final DependencyServiceGrpc.DependencyServiceBlockingStub deps;

  private CodemodeClient(ManagedChannel owned, Channel channel) {
    this(
        owned,
        SessionServiceGrpc.newBlockingStub(channel),
        ExecuteServiceGrpc.newBlockingStub(channel),
        SkillStoreServiceGrpc.newBlockingStub(channel),
        ArtifactServiceGrpc.newBlockingStub(channel),
        ArtifactServiceGrpc.newStub(channel),
        DependencyServiceGrpc.newBlockingStub(channel));
  }

  private CodemodeClient(
      ManagedChannel owned,
      SessionServiceGrpc.SessionServiceBlockingStub sessions,
      ExecuteServiceGrpc.ExecuteServiceBlockingStub execute,
      SkillStoreServiceGrpc.SkillStoreServiceBlockingStub skills,
      ArtifactServiceGrpc.ArtifactServiceBlockingStub artifacts,
      ArtifactServiceGrpc.ArtifactServiceStub artifactsAsync,
      DependencyServiceGrpc.DependencyServiceBlockingStub deps) {
    this.owned = owned;
    this.sessions = sessions;
    this.execute = execute;
    this.skills = skills;
    this.artifacts = artifacts;
    this.artifactsAsync = artifactsAsync;
    this.deps = deps;
  }

  /** Starts building a client for {@code target}, e.g. {@code "127.0.0.1:50051"}. */
  public static Builder builder(String target) {
    return new Builder(target);
  }

  /** A view of this client whose calls must finish within {@code timeout} from now. */
  public CodemodeClient withDeadline(Duration timeout) {
    Deadline deadline = Deadline.after(timeout.toNanos(), TimeUnit.NANOSECONDS);
    return new CodemodeClient(
        null,
        sessions.withDeadline(deadline),
        execute.withDeadline(deadline),
        skills.withDeadline(deadline),
        artifacts.withDeadline(deadline),
        artifactsAsync.withDeadline(deadline),
        deps.withDeadline(deadline));
  }

  /**
   * Admits a session and returns once it is READY (waiting with WaitSession, within this client's
   * deadline if it has one); close it (try-with-resources) when done. Config fields left unset
   * take the server's defaults; a set one is honoured or refused, e.g. {@code
   * setAllowRuntimeDeps(false)}. A session that ends FAILED is deleted and reported as a {@link
   * CodemodeException} carrying it in {@link CodemodeException#session()}: reason
   * SANDBOX_START_FAILED (UNAVAILABLE), or DEPS_INSTALL_FAILED (FAILED_PRECONDITION) when its
   * start-up deps failed; the message is its state_message.
   */
  public Session createSession(SessionConfig config) {
    return createSession(config, true);
  }

  /**
   * As {@link #createSession(SessionConfig)}; with {@code waitUntilReady} false it returns as soon
   * as the server admitted the session, which may still be STARTING ({@link Session#waitSession()}
   * waits later).
   */
  public Session createSession(SessionConfig config, boolean waitUntilReady) {
    dev.codemode.v1.Session info;
    try {
      info =
          sessions
              .createSession(
                  CreateSessionRequest.newBuilder()
                      .setSession(dev.codemode.v1.Session.newBuilder().setConfig(config))
                      .build())
              .getSession();
    } catch (StatusRuntimeException e) {
      throw CodemodeException.from(e);
    }
    Session session = new Session(this, info.getName(), info);
    if (!waitUntilReady) {
      return session;
    }
    try {
      info = SessionWaits.settle(sessions, info);
      SessionWaits.check(info, false);
    } catch (CodemodeException e) {
      // The caller gets no handle, so nothing else would delete it.
      try {
        session.close();
      } catch (CodemodeException ignored) {
        // The failure being reported matters more than this one.
      }
      throw e;
    }
    return new Session(this, info.getName(), info);
  }

  /** Starts a sandbox with the server's default configuration and waits until it is READY. */
  public Session createSession() {
    return createSession(SessionConfig.getDefaultInstance());
  }

  /**
   * The events of an execution ("sessions/{s}/executions/{e}", from ExecutionStarted) whose
   * sequence is above {@code afterSequence} (0: from the start): live while it runs, from the
   * server's record after it ended, with no gap and no duplicate. To resume a broken stream pass
   * the last sequence seen, whatever the event (a heartbeat carries the sequence before it). The
   * same stream type as {@link Session#stream(String)}; closing it only detaches, the execution
   * goes on. EXECUTION_NOT_FOUND, or OUT_OF_RANGE / EVENTS_EXPIRED (metadata
   * "firstAvailableSequence") when those events are gone.
   */
  public ExecutionStream attachExecution(String execution, long afterSequence) {
    AttachExecutionRequest request =
        AttachExecutionRequest.newBuilder().setExecution(execution).setAfterSequence(afterSequence).build();
    return ExecutionStream.open(() -> execute.attachExecution(request));
  }

  /**
   * Asks a running execution to stop and returns at once; its stream then ends with finished
   * CANCELLED (the session stays BUSY until the code has stopped). False when it had already ended
   * (a no-op).
   */
  public boolean cancelExecution(String execution) {
    try {
      return execute
          .cancelExecution(CancelExecutionRequest.newBuilder().setExecution(execution).build())
          .getCancelled();
    } catch (StatusRuntimeException e) {
      throw CodemodeException.from(e);
    }
  }

  /** A handle to an existing session ("sessions/{id}"), without calling the server. */
  public Session session(String name) {
    return new Session(this, name, null);
  }

  /**
   * A tenant's skill library; "" means the caller's own (an operator's: the server's default
   * tenant). Only an operator may name another.
   */
  public Skills skills(String tenant) {
    return new Skills(skills, tenant);
  }

  /** A tenant's artifact store; the tenant works as for {@link #skills(String)}. */
  public Artifacts artifacts(String tenant) {
    return new Artifacts(artifacts, artifactsAsync, tenant);
  }

  /** Closes the channel this client created (views share it and do nothing). */
  @Override
  public void close() {
    if (owned == null) {
      return;
    }
    owned.shutdown();
    try {
      if (!owned.awaitTermination(5, TimeUnit.SECONDS)) {
        owned.shutdownNow();
      }
    } catch (InterruptedException e) {
      owned.shutdownNow();
      Thread.currentThread().interrupt();
    }
  }

  /**
   * Configures connection, auth and TLS. A caller authenticates with a token, a client
   * certificate (mTLS), or both.
   */
  public static final class Builder {
    private final String target;
    private String token = "";
    private boolean plaintext;
    private boolean allowInsecureToken;
    private byte[] caPem;
    private byte[] certPem;
    private byte[] keyPem;
    private String authority;

    private Builder(String target) {
      this.target = target;
    }

    /** Sent as "authorization: Bearer &lt;token&gt;" on every call. */
    public Builder token(String token) {
      this.token = token;
      return this;
    }

    /**
     * Plaintext HTTP/2, for loopback or trusted networks only: with a token, {@link #build()}
     * refuses a target that is not loopback or a unix socket, unless {@link
     * #allowInsecureToken()} is called too.
     */
    public Builder plaintext() {
      this.plaintext = true;
      return this;
    }

    /**
     * Lets {@link #plaintext()} send the token to a remote host, for a trusted private network
     * where anyone on the path may read it.
     */
    public Builder allowInsecureToken() {
      this.allowInsecureToken = true;
      return this;
    }

    /** The CA that signed the server certificate (PEM); default is the JVM's trust store. */
    public Builder trustedCa(String caPem) {
      this.caPem = caPem.getBytes(StandardCharsets.UTF_8);
      return this;
    }

    /** A client certificate chain and PKCS#8 private key (PEM) for mTLS. */
    public Builder clientCertificate(String certPem, String keyPem) {
      this.certPem = certPem.getBytes(StandardCharsets.UTF_8);
      this.keyPem = keyPem.getBytes(StandardCharsets.UTF_8);
      return this;
    }

    /** Overrides the authority (TLS server name) when it differs from the target's host. */
    public Builder authority(String authority) {
      this.authority = authority;
      return this;
    }

    /**
     * @throws IllegalArgumentException when a token would be sent in plaintext to a host that is
     *     not loopback, or the TLS material is unreadable
     */
    public CodemodeClient build() {
      if (plaintext && !token.isEmpty() && !allowInsecureToken && !PlaintextTokens.isLocalTarget(target)) {
        throw PlaintextTokens.refusal(target);
      }
      var builder = Grpc.newChannelBuilder(target, credentials());
      if (authority != null) {
        builder.overrideAuthority(authority);
      }
      ManagedChannel channel = builder.build();
      Channel intercepted = channel;
      if (!token.isEmpty()) {
        // An interceptor rather than CallCredentials: CallCredentials are refused on plaintext
        // channels, and loopback plaintext is how most tests and sidecars connect.
        Metadata headers = new Metadata();
        headers.put(AUTHORIZATION, "Bearer " + token);
        intercepted =
            ClientInterceptors.intercept(channel, MetadataUtils.newAttachHeadersInterceptor(headers));
      }
      return new CodemodeClient(channel, intercepted);
    }

    private ChannelCredentials credentials() {
      if (plaintext) {
        return InsecureChannelCredentials.create();
      }
      var tls = TlsChannelCredentials.newBuilder();
      try {
        if (caPem != null) {
          tls.trustManager(new ByteArrayInputStream(caPem));
        }
        if (certPem != null) {
          tls.keyManager(new ByteArrayInputStream(certPem), new ByteArrayInputStream(keyPem));
        }
      } catch (IOException e) {
        throw new IllegalArgumentException("codemode: unreadable TLS material: " + e.getMessage(), e);
      }
      return tls.build();
    }
  }
}
