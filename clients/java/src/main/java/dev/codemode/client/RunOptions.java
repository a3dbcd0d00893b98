package dev.codemode.client;

import java.time.Duration;

/**
 * Options of one execution.
 *
 * @param executionTimeout server-side timeout: the code is interrupted and the run finishes with
 *     EXECUTION_STATUS_TIMEOUT (unlike a call deadline, which ends the call with
 *     DEADLINE_EXCEEDED); null means the session's default
 * @param requestId idempotency key, unique in the session ("" for none): a retry with the same id
 *     never runs the code twice. While the first run is going the retry attaches to it; after it
 *     ended the retry receives its recorded events from the start. The same id with different code
 *     is refused with ALREADY_EXISTS (DUPLICATE_REQUEST).
 */
public record RunOptions(Duration executionTimeout, String requestId) {
  public static final RunOptions DEFAULT = new RunOptions(null, "");

  public static RunOptions timeout(Duration executionTimeout) {
    return new RunOptions(executionTimeout, "");
  }

  /** These options with {@code requestId}. */
  public RunOptions withRequestId(String requestId) {
    return new RunOptions(executionTimeout, requestId);
  }
}
