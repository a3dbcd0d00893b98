package dev.codemode.client;

import dev.codemode.v1.CreateSessionRequest;
import dev.codemode.v1.ExecuteServiceGrpc;
import dev.codemode.v1.SessionConfig;
import dev.codemode.v1.SessionServiceGrpc;
import dev.codemode.v1.SkillStoreServiceGrpc;
import io.grpc.ChannelCredentials;
import io.grpc.ClientInterceptors;
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

  private CodemodeClient(
      ManagedChannel owned,
      SessionServiceGrpc.SessionServiceBlockingStub sessions,
      ExecuteServiceGrpc.ExecuteServiceBlockingStub execute,
      SkillStoreServiceGrpc.SkillStoreServiceBlockingStub skills) {
    this.owned = owned;
    this.sessions = sessions;
    this.execute = execute;
    this.skills = skills;
  }

  /** Starts building a client for {@code target}, e.g. {@code "127.0.0.1:50051"}. */
  public static Builder builder(String target) {
    return new Builder(target);
  }

  /** A view of this client whose calls must finish within {@code timeout} from now. */
  public CodemodeClient withDeadline(Duration timeout) {
    long nanos = timeout.toNanos();
    return new CodemodeClient(
        null,
        sessions.withDeadlineAfter(nanos, TimeUnit.NANOSECONDS),
        execute.withDeadlineAfter(nanos, TimeUnit.NANOSECONDS),
        skills.withDeadlineAfter(nanos, TimeUnit.NANOSECONDS));
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

  /** The tenant's skill library; "" means the server's default tenant. */
  public Skills skills(String tenant) {
    return new Skills(skills, tenant);
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

  /** Configures connection, auth and TLS. */
  public static final class Builder {
    private final String target;
    private String token = "";
    private boolean plaintext;
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

    /** Plaintext HTTP/2, for loopback or trusted networks only: the token travels unencrypted. */
    public Builder plaintext() {
      this.plaintext = true;
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

    public CodemodeClient build() {
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
      return new CodemodeClient(
          channel,
          SessionServiceGrpc.newBlockingStub(intercepted),
          ExecuteServiceGrpc.newBlockingStub(intercepted),
          SkillStoreServiceGrpc.newBlockingStub(intercepted));
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
