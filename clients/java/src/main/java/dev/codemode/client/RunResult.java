package dev.codemode.client;

import dev.codemode.v1.ExecutionError;
import dev.codemode.v1.ExecutionFinished;
import dev.codemode.v1.ExecutionResult;
import dev.codemode.v1.ExecutionStatus;
import java.util.Optional;

/**
 * Everything one execution produced.
 *
 * @param execution "sessions/{session}/executions/{execution}"
 * @param value the final expression's value, empty when there was none
 * @param error the exception the code raised, empty when none
 */
public record RunResult(
    String execution,
    String stdout,
    String stderr,
    Optional<ExecutionResult> value,
    Optional<ExecutionError> error,
    ExecutionFinished finished) {

  public ExecutionStatus status() {
    return finished.getStatus();
  }

  /** Whether the code ran to completion. */
  public boolean ok() {
    return status() == ExecutionStatus.EXECUTION_STATUS_OK;
  }
}
