package dev.codemode.client;

import dev.codemode.v1.ArtifactServiceGrpc;
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

  /** Starts a sandbox and returns once it is ready; close it (try-with-resources) when done. */
  public Session createSession(SessionConfig config) {
    try {
      var response =
          sessions.createSession(
              CreateSessionRequest.newBuilder()
                  .setSession(dev.codemode.v1.Session.newBuilder().setConfig(config))
                  .build());
      return new Session(this, response.getSession().getName(), response.getSession());
    } catch (StatusRuntimeException e) {
      throw CodemodeException.from(e);
    }
  }

  /** Starts a sandbox with the server's default configuration. */
  public Session createSession() {
    return createSession(SessionConfig.getDefaultInstance());
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
