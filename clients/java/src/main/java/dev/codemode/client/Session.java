package dev.codemode.client;

import com.google.protobuf.ByteString;
import dev.codemode.v1.DeleteSessionRequest;
import dev.codemode.v1.ExecuteRequest;
import dev.codemode.v1.ExecuteResponse;
import dev.codemode.v1.ExecutionError;
import dev.codemode.v1.ExecutionFinished;
import dev.codemode.v1.ExecutionResult;
import dev.codemode.v1.OutputStream;
import dev.codemode.v1.ResetSessionRequest;
import io.grpc.StatusRuntimeException;
import java.nio.charset.StandardCharsets;
import java.time.Duration;
import java.util.Optional;
import java.util.concurrent.TimeUnit;

/**
 * A stateful Python interpreter in its own sandbox: variables, imports and functions persist
 * across runs. One run at a time (the server answers SESSION_BUSY otherwise). {@link #close()}
 * deletes it, so try-with-resources ends its sandbox.
 */
public final class Session implements AutoCloseable {
  /** Bounds close(), which must not hang a try-with-resources block on a dead server. */
  private static final long CLOSE_TIMEOUT_SECONDS = 30;

  private final CodemodeClient client;
  private final String name;
  private volatile dev.codemode.v1.Session info;

  Session(CodemodeClient client, String name, dev.codemode.v1.Session info) {
    this.client = client;
    this.name = name;
    this.info = info;
  }

  /** "sessions/{id}". */
  public String name() {
    return name;
  }

  /** The session as createSession (or the last {@link #waitSession()}) returned it; null for handles until then. */
  public dev.codemode.v1.Session info() {
    return info;
  }

  /**
   * Waits (WaitSession, within this session's deadline if it has one) until the session is neither
   * STARTING nor INSTALLING and returns it, whatever state it settled in: check its state,
   * state_message and last_install. For calls made without waiting.
   */
  public dev.codemode.v1.Session waitSession() {
    dev.codemode.v1.Session current = info;
    if (current == null || !SessionWaits.isTransient(current.getState())) {
      // Unknown or settled when last seen: ask once, so the answer is current.
      current = SessionWaits.waitOnce(client.sessions, name);
    }
    info = SessionWaits.settle(client.sessions, current);
    return info;
  }

  /** The session's Python packages (DependencyService). */
  public Dependencies deps() {
    return new Dependencies(client, name);
  }

  /** The same session, with calls bounded by {@code timeout} from now. */
  public Session withDeadline(Duration timeout) {
    return new Session(client.withDeadline(timeout), name, info);
  }

  /** Runs code and collects its events; code failures are in the result, call failures throw. */
  public RunResult run(String code) {
    return run(code, RunOptions.DEFAULT);
  }

  public RunResult run(String code, RunOptions options) {
    ByteString stdout = ByteString.EMPTY;
    ByteString stderr = ByteString.EMPTY;
    String execution = "";
    ExecutionResult value = null;
    ExecutionError error = null;
    ExecutionFinished finished = null;
    try (ExecutionStream events = stream(code, options)) {
      while (events.hasNext()) {
        ExecuteResponse event = events.next();
        switch (event.getEventCase()) {
          case STARTED -> execution = event.getStarted().getExecution();
          case OUTPUT -> {
            if (event.getOutput().getStream() == OutputStream.OUTPUT_STREAM_STDERR) {
              stderr = stderr.concat(event.getOutput().getData());
            } else {
              stdout = stdout.concat(event.getOutput().getData());
            }
          }
          case RESULT -> value = event.getResult();
          case ERROR -> error = event.getError();
          case FINISHED -> finished = event.getFinished();
          default -> {}
        }
      }
    }
    if (finished == null) {
      throw new IllegalStateException("codemode: execution stream ended without a finished event");
    }
    // Decoded once at the end: a multi-byte character may span two chunks.
    return new RunResult(
        execution,
        stdout.toString(StandardCharsets.UTF_8),
        stderr.toString(StandardCharsets.UTF_8),
        Optional.ofNullable(value),
        Optional.ofNullable(error),
        finished);
  }

  /**
   * Starts an execution and returns its events as they arrive. Close the stream when done; closing
   * it early cancels the execution (it finishes CANCELLED, as {@link
   * CodemodeClient#attachExecution} then shows).
   */
  public ExecutionStream stream(String code, RunOptions options) {
    ExecuteRequest.Builder request =
        ExecuteRequest.newBuilder().setSession(name).setCode(code).setRequestId(options.requestId());
    if (options.executionTimeout() != null) {
      Duration timeout = options.executionTimeout();
      request.setTimeout(
          com.google.protobuf.Duration.newBuilder()
              .setSeconds(timeout.getSeconds())
              .setNanos(timeout.getNano()));
    }
    ExecuteRequest built = request.build();
    return ExecutionStream.open(() -> client.execute.execute(built));
  }

  public ExecutionStream stream(String code) {
    return stream(code, RunOptions.DEFAULT);
  }

  /** Replaces the interpreter, dropping user state. */
  public void reset() {
    try {
      client.sessions.resetSession(ResetSessionRequest.newBuilder().setName(name).build());
    } catch (StatusRuntimeException e) {
      throw CodemodeException.from(e);
    }
  }

  /**
   * Deletes the session and stops its sandbox. Idempotent, as {@link AutoCloseable} users expect:
   * a session already deleted or expired counts as closed.
   */
  @Override
  public void close() {
    try {
      client
          .sessions
          .withDeadlineAfter(CLOSE_TIMEOUT_SECONDS, TimeUnit.SECONDS)
          .deleteSession(DeleteSessionRequest.newBuilder().setName(name).build());
    } catch (StatusRuntimeException e) {
      CodemodeException error = CodemodeException.from(e);
      if (!error.reason().equals("SESSION_NOT_FOUND")) {
        throw error;
      }
    }
  }
}
