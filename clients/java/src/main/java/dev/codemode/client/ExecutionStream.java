package dev.codemode.client;

import dev.codemode.v1.ExecuteResponse;
import io.grpc.Context;
import io.grpc.StatusRuntimeException;
import java.util.Iterator;
import java.util.function.Supplier;

/**
 * The events of one execution as they arrive, heartbeats included (a heartbeat carries the
 * sequence of the event before it). Close it (try-with-resources) to cancel the call when stopping
 * early; {@link #cancel()} may be called from any thread. Cancelling an Execute stream cancels the
 * execution on the server (it finishes CANCELLED); cancelling an attached stream only detaches.
 * Call failures surface as {@link CodemodeException} from {@link #hasNext()}.
 */
public final class ExecutionStream implements Iterator<ExecuteResponse>, AutoCloseable {
  private final Context.CancellableContext context;
  private final Iterator<ExecuteResponse> events;

  ExecutionStream(Context.CancellableContext context, Iterator<ExecuteResponse> events) {
    this.context = context;
    this.events = events;
  }

  /**
   * Starts a server-streaming call (Execute or AttachExecution) in a cancellable context of its
   * own: the blocking call binds to the context current when it starts, so {@link #cancel()} then
   * cancels exactly this call, from any thread.
   */
  static ExecutionStream open(Supplier<Iterator<ExecuteResponse>> call) {
    Context.CancellableContext context = Context.current().withCancellation();
    Context previous = context.attach();
    try {
      return new ExecutionStream(context, call.get());
    } catch (StatusRuntimeException e) {
      context.cancel(null);
      throw CodemodeException.from(e);
    } finally {
      context.detach(previous);
    }
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

  /** Cancels the call: for Execute, the server cancels the execution; for an attach, it detaches. */
  public void cancel() {
    context.cancel(null);
  }

  @Override
  public void close() {
    cancel();
  }
}
