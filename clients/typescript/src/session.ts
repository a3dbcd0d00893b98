import type { MessageInitShape } from "@bufbuild/protobuf";
import { durationFromMs } from "@bufbuild/protobuf/wkt";
import type { ExecuteRequestSchema, ExecuteResponse, ExecutionError, ExecutionFinished, ExecutionResult } from "./gen/codemode/v1/execute_pb.js";
import { ExecutionStatus, OutputStream } from "./gen/codemode/v1/execute_pb.js";
import type { Session as SessionInfo } from "./gen/codemode/v1/session_pb.js";
import type { CallOptions, CodemodeClient } from "./client.js";
import { Dependencies } from "./deps.js";
import { call, CodemodeError, toCodemodeError } from "./errors.js";
import { deadlineOf, isTransient, remaining, waitSettled } from "./wait.js";

/** Bounds close(): it runs from `await using` and must not hang on a dead server. */
const CLOSE_TIMEOUT_MS = 30_000;

export interface RunOptions extends CallOptions {
  /**
   * Server-side execution timeout: the code is interrupted and the run
   * finishes with EXECUTION_STATUS_TIMEOUT (unlike `timeoutMs`, which ends
   * the call with DEADLINE_EXCEEDED).
   */
  executionTimeoutMs?: number;
  /**
   * Idempotency key, unique in the session: a retry with the same id never
   * runs the code twice. While the first run is going the retry attaches to
   * it; after it ended the retry receives its recorded events from the start.
   * The same id with different code: ALREADY_EXISTS (DUPLICATE_REQUEST).
   */
  requestId?: string;
}

/** Everything one execution produced. */
export interface RunResult {
  /** "sessions/{session}/executions/{execution}" */
  execution: string;
  stdout: string;
  stderr: string;
  /** The final expression's value, undefined when there was none. */
  value?: ExecutionResult;
  /** The exception the code raised, undefined when none. */
  error?: ExecutionError;
  finished: ExecutionFinished;
  status: ExecutionStatus;
}

/**
 * A stateful Python interpreter in its own sandbox: variables, imports and
 * functions persist across runs. One run at a time (SESSION_BUSY otherwise).
 */
export class Session implements AsyncDisposable {
  constructor(
    private readonly client: CodemodeClient,
    /** "sessions/{id}" */
    readonly name: string,
    /** The session as createSession (or the last `wait()`) returned it; undefined for handles until then. */
    public info?: SessionInfo,
  ) {}

  /** The session's Python packages (DependencyService). */
  get deps(): Dependencies {
    return new Dependencies(this.client, this.name);
  }

  /**
   * Waits (WaitSession; `timeoutMs` bounds the whole) until the session is
   * neither STARTING nor INSTALLING and resolves with it, whatever state it
   * settled in: check `state`, `stateMessage` and `lastInstall`. For calls
   * made with `wait: false`.
   */
  async wait(options: CallOptions = {}): Promise<SessionInfo> {
    const deadline = deadlineOf(options);
    let info = this.info;
    if (!info || !isTransient(info.state)) {
      // Unknown or settled when last seen: ask once, so the answer is current.
      info = (await call(() => this.client.sessionService.waitSession({ name: this.name }, remaining(options, deadline)))).session!;
    }
    this.info = await waitSettled(this.client, info, options, deadline);
    return this.info;
  }

  /**
   * Runs code and collects its events. A failure of the code itself
   * (exception, timeout) is in the result; a failed call throws CodemodeError.
   */
  async run(code: string, options: RunOptions = {}): Promise<RunResult> {
    const stdout: Uint8Array[] = [];
    const stderr: Uint8Array[] = [];
    const result: Partial<RunResult> = { execution: "" };
    for await (const event of this.stream(code, options)) {
      switch (event.event.case) {
        case "started":
          result.execution = event.event.value.execution;
          break;
        case "output":
          (event.event.value.stream === OutputStream.STDERR ? stderr : stdout).push(event.event.value.data);
          break;
        case "result":
          result.value = event.event.value;
          break;
        case "error":
          result.error = event.event.value;
          break;
        case "finished":
          result.finished = event.event.value;
          break;
      }
    }
    if (!result.finished) throw new Error("codemode: execution stream ended without a finished event");
    // Decode once at the end: a multi-byte character may span two chunks.
    return {
      ...result,
      stdout: Buffer.concat(stdout).toString("utf8"),
      stderr: Buffer.concat(stderr).toString("utf8"),
      finished: result.finished,
      status: result.finished.status,
    } as RunResult;
  }

  /**
   * Runs code and yields its events as they arrive, heartbeats included (a
   * heartbeat carries the sequence of the event before it). Leaving the loop
   * early (break, throw) or aborting `signal` cancels the call, which
   * cancels the execution on the server: it finishes CANCELLED, as
   * `client.attachExecution` then shows.
   */
  stream(code: string, options: RunOptions = {}): AsyncGenerator<ExecuteResponse, void, undefined> {
    const request: MessageInitShape<typeof ExecuteRequestSchema> = { session: this.name, code, requestId: options.requestId ?? "" };
    if (options.executionTimeoutMs !== undefined) request.timeout = durationFromMs(options.executionTimeoutMs);
    return executionEvents((signal) => this.client.executeService.execute(request, { signal, timeoutMs: options.timeoutMs }), options);
  }

  /** Replaces the interpreter, dropping user state. */
  async reset(options: CallOptions = {}): Promise<void> {
    try {
      await this.client.sessionService.resetSession({ name: this.name }, options);
    } catch (error) {
      throw toCodemodeError(error);
    }
  }

  /** Deletes the session and stops its sandbox; a session already gone counts as closed. */
  async close(): Promise<void> {
    try {
      await this.client.sessionService.deleteSession({ name: this.name }, { timeoutMs: CLOSE_TIMEOUT_MS });
    } catch (error) {
      const mapped = toCodemodeError(error);
      if (mapped instanceof CodemodeError && mapped.reason === "SESSION_NOT_FOUND") return;
      throw mapped;
    }
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }
}

/**
 * Yields an execution stream's events (Execute or AttachExecution); the call
 * is cancelled however the loop ends, and aborting `options.signal` cancels it.
 */
export async function* executionEvents(
  open: (signal: AbortSignal) => AsyncIterable<ExecuteResponse>,
  options: CallOptions,
): AsyncGenerator<ExecuteResponse, void, undefined> {
  const abort = new AbortController();
  const onAbort = () => abort.abort(options.signal?.reason);
  if (options.signal?.aborted) onAbort();
  options.signal?.addEventListener("abort", onAbort, { once: true });
  try {
    for await (const event of open(abort.signal)) {
      yield event;
    }
  } catch (error) {
    throw toCodemodeError(error);
  } finally {
    options.signal?.removeEventListener("abort", onAbort);
    abort.abort();
  }
}

export { ExecutionStatus, OutputStream };
