package dev.codemode.client;

import static org.junit.jupiter.api.Assertions.assertDoesNotThrow;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import dev.codemode.v1.DependencyInstall;
import dev.codemode.v1.ErrorReason;
import dev.codemode.v1.Session;
import io.grpc.Status;
import java.util.Map;
import org.junit.jupiter.api.Test;

/** What a settled session means to the caller: no server needed, the inputs are the Session messages WaitSession returns. */
class SessionWaitsTest {
  private static final DependencyInstall FAILED_INSTALL =
      DependencyInstall.newBuilder()
          .setState(DependencyInstall.State.STATE_FAILED)
          .setErrorReason("DEPS_INSTALL_FAILED")
          .setErrorMessage("no cm-tiny-missing")
          .build();

  private static Session.Builder session(Session.State state) {
    return Session.newBuilder().setName("sessions/s1").setState(state);
  }

  @Test
  void startingAndInstallingAreTransient() {
    assertTrue(SessionWaits.isTransient(Session.State.STATE_STARTING));
    assertTrue(SessionWaits.isTransient(Session.State.STATE_INSTALLING));
    assertFalse(SessionWaits.isTransient(Session.State.STATE_READY));
    assertFalse(SessionWaits.isTransient(Session.State.STATE_FAILED));
  }

  @Test
  void readyIsFineAndAnOlderFailedInstallIsNotThisCalls() {
    assertDoesNotThrow(() -> SessionWaits.check(session(Session.State.STATE_READY).build(), false));
    assertDoesNotThrow(
        () -> SessionWaits.check(session(Session.State.STATE_READY).setLastInstall(FAILED_INSTALL).build(), false));
  }

  @Test
  void aFailedInstallIsDepsInstallFailed() {
    Session settled = session(Session.State.STATE_READY).setLastInstall(FAILED_INSTALL).build();
    CodemodeException e = assertThrows(CodemodeException.class, () -> SessionWaits.check(settled, true));
    assertEquals(Status.Code.FAILED_PRECONDITION, e.code());
    assertEquals(ErrorReason.ERROR_REASON_DEPS_INSTALL_FAILED, e.errorReason());
    assertEquals("no cm-tiny-missing", e.status().getDescription());
    assertEquals(Map.of("session", "sessions/s1"), e.metadata());
    assertEquals(settled, e.session().orElseThrow());
  }

  @Test
  void aFailedSessionNamesWhy() {
    CodemodeException start =
        assertThrows(
            CodemodeException.class,
            () -> SessionWaits.check(session(Session.State.STATE_FAILED).setStateMessage("no docker").build(), false));
    assertEquals(Status.Code.UNAVAILABLE, start.code());
    assertEquals("SANDBOX_START_FAILED", start.reason());
    assertEquals("no docker", start.status().getDescription());
    CodemodeException deps =
        assertThrows(
            CodemodeException.class,
            () ->
                SessionWaits.check(
                    session(Session.State.STATE_FAILED).setStateMessage("deps failed").setLastInstall(FAILED_INSTALL).build(),
                    false));
    assertEquals(Status.Code.FAILED_PRECONDITION, deps.code());
    assertEquals("DEPS_INSTALL_FAILED", deps.reason());
  }
}
