package dev.codemode.client;

import dev.codemode.v1.ExecuteResponse;
import io.grpc.Context;
import io.grpc.StatusRuntimeException;
import java.util.Iterator;

/**
 * The events of one execution as they arrive, heartbeats included. Close it (try-with-resources)
 * to cancel the call when stopping early; {@link #cancel()} may be called from any thread and
 * interrupts the code on the server. Call failures surface as {@link CodemodeException} from
 * {@link #hasNext()}.
 */
public final class ExecutionStream implements Iterator<ExecuteResponse>, AutoCloseable {
  private final Context.CancellableContext context;
  private final Iterator<ExecuteResponse> events;

  ExecutionStream(Context.CancellableContext context, Iterator<ExecuteResponse> events) {
    this.context = context;
    this.events = events;
  }

  @Override
  public boolean hasNext() {
    try {
      return events.hasNext();
    } catch (StatusRuntimeException e) {
      throw CodemodeException.from(e);
    }
  }

  @Override
  public ExecuteResponse next() {
    try {
      return events.next();
    } catch (StatusRuntimeException e) {
      throw CodemodeException.from(e);
    }
  }

  /** Cancels the call; the server interrupts the running code. */
  public void cancel() {
    context.cancel(null);
  }

  @Override
  public void close() {
    cancel();
  }
}
