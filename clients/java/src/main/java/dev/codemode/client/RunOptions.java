package dev.codemode.client;

import java.time.Duration;

/**
 * Options of one execution.
 *
 * @param executionTimeout server-side timeout: the code is interrupted and the run finishes with
 *     EXECUTION_STATUS_TIMEOUT (unlike a call deadline, which ends the call with
 *     DEADLINE_EXCEEDED); null means the session's default
 * @param requestId idempotency key: a retry with the same id is rejected instead of running twice;
 *     "" for none
 */
public record RunOptions(Duration executionTimeout, String requestId) {
  public static final RunOptions DEFAULT = new RunOptions(null, "");

  public static RunOptions timeout(Duration executionTimeout) {
    return new RunOptions(executionTimeout, "");
  }
}
