package dev.codemode.client;

import dev.codemode.v1.DependencyInstall;
import dev.codemode.v1.Session;
import dev.codemode.v1.SessionServiceGrpc;
import dev.codemode.v1.WaitSessionRequest;
import io.grpc.Deadline;
import io.grpc.Status;
import io.grpc.StatusRuntimeException;
import java.util.concurrent.TimeUnit;

/**
 * Waiting for a session to settle, the one model of every slow session call (CreateSession,
 * AddDependency, SyncDependencies): WaitSession until the session is neither STARTING nor
 * INSTALLING.
 */
final class SessionWaits {
  /**
   * What one WaitSession call asks for: the server's default (it caps at 60 s so that no proxy's
   * idle timeout cuts the call); a longer wait is several calls.
   */
  private static final long WAIT_SESSION_MILLIS = 30_000;

  private SessionWaits() {}

  /** Still settling: a slow operation (start, package install) is running. */
  static boolean isTransient(Session.State state) {
    return state == Session.State.STATE_STARTING || state == Session.State.STATE_INSTALLING;
  }

  /** Calls WaitSession until the session settles, within the stub's deadline if it has one. */
  static Session settle(SessionServiceGrpc.SessionServiceBlockingStub sessions, Session session) {
    while (isTransient(session.getState())) {
      if (waitMillis(sessions) <= 0) {
        throw CodemodeException.settled(
            Status.Code.DEADLINE_EXCEEDED,
            "DEADLINE_EXCEEDED",
            "the deadline passed while the session was " + session.getState(),
            session);
      }
      session = waitOnce(sessions, session.getName());
    }
    return session;
  }

  /** How long the next WaitSession may wait: 30 s, or what is left of the stub's deadline. */
  private static long waitMillis(SessionServiceGrpc.SessionServiceBlockingStub sessions) {
    Deadline deadline = sessions.getCallOptions().getDeadline();
    return deadline == null
        ? WAIT_SESSION_MILLIS
        : Math.min(WAIT_SESSION_MILLIS, deadline.timeRemaining(TimeUnit.MILLISECONDS));
  }

  /** One WaitSession call. */
  static Session waitOnce(SessionServiceGrpc.SessionServiceBlockingStub sessions, String name) {
    long millis = Math.max(1, waitMillis(sessions));
    WaitSessionRequest request =
        WaitSessionRequest.newBuilder()
            .setName(name)
            .setTimeout(
                com.google.protobuf.Duration.newBuilder()
                    .setSeconds(millis / 1000)
                    .setNanos((int) (millis % 1000) * 1_000_000))
            .build();
    try {
      return sessions.waitSession(request).getSession();
    } catch (StatusRuntimeException e) {
      throw CodemodeException.from(e);
    }
  }

  /**
   * Throws what went wrong once a session settled, if anything. An install this call started that
   * failed is reported first; then a FAILED session, with the reason of its failed start-up install
   * when there was one.
   */
  static void check(Session session, boolean installStarted) {
    DependencyInstall install = session.getLastInstall();
    boolean installFailed = install.getState() == DependencyInstall.State.STATE_FAILED;
    String installReason = install.getErrorReason().isEmpty() ? "DEPS_INSTALL_FAILED" : install.getErrorReason();
    if (installStarted && installFailed) {
      throw CodemodeException.settled(
          Status.Code.FAILED_PRECONDITION, installReason, install.getErrorMessage(), session);
    }
    if (session.getState() != Session.State.STATE_FAILED) {
      return;
    }
    String failure = session.getStateMessage();
    if (failure.isEmpty()) {
      failure = install.getErrorMessage().isEmpty() ? "the session failed" : install.getErrorMessage();
    }
    if (installFailed) {
      throw CodemodeException.settled(Status.Code.FAILED_PRECONDITION, installReason, failure, session);
    }
    throw CodemodeException.settled(Status.Code.UNAVAILABLE, "SANDBOX_START_FAILED", failure, session);
  }
}
