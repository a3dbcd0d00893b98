import { Code } from "@connectrpc/connect";
import { durationFromMs } from "@bufbuild/protobuf/wkt";
import { DependencyInstall_State, Session_State, type Session as SessionInfo } from "./gen/codemode/v1/session_pb.js";
import type { CallOptions, CodemodeClient } from "./client.js";
import { call, sessionError } from "./errors.js";

/**
 * What one WaitSession call asks for: the server's default (it caps at 60 s
 * so that no proxy's idle timeout cuts the call); a longer wait is several calls.
 */
const WAIT_SESSION_TIMEOUT_MS = 30_000;

/** Options of the calls that wait for a session to settle (createSession, deps.add, deps.sync). */
export interface WaitOptions extends CallOptions {
  /**
   * `false`: return as soon as the server accepted the call; the session may
   * still be STARTING or INSTALLING (`session.wait()` waits later). Default
   * `true`. `timeoutMs` bounds the call and the whole wait.
   */
  wait?: boolean;
}

/** Still settling: a slow operation (start, package install) is running. */
export function isTransient(state: Session_State | undefined): boolean {
  return state === Session_State.STARTING || state === Session_State.INSTALLING;
}

/** A deadline (performance.now() ms) for `timeoutMs`, so several calls share one bound. */
export function deadlineOf(options: CallOptions): number | undefined {
  return options.timeoutMs === undefined ? undefined : performance.now() + options.timeoutMs;
}

/** The same options with `timeoutMs` as what is left until `deadline`. */
export function remaining(options: CallOptions, deadline: number | undefined): CallOptions {
  return deadline === undefined ? { signal: options.signal } : { signal: options.signal, timeoutMs: Math.max(1, deadline - performance.now()) };
}

/** Calls WaitSession until the session is neither STARTING nor INSTALLING, within `deadline`. */
export async function waitSettled(
  client: CodemodeClient,
  session: SessionInfo,
  options: CallOptions,
  deadline: number | undefined,
): Promise<SessionInfo> {
  while (isTransient(session.state)) {
    let timeoutMs = WAIT_SESSION_TIMEOUT_MS;
    if (deadline !== undefined) timeoutMs = Math.min(timeoutMs, deadline - performance.now());
    if (timeoutMs <= 0) {
      throw sessionError(Code.DeadlineExceeded, "DEADLINE_EXCEEDED", `the deadline passed while the session was ${Session_State[session.state]}`, session);
    }
    const response = await call(() =>
      client.sessionService.waitSession({ name: session.name, timeout: durationFromMs(timeoutMs) }, remaining(options, deadline)),
    );
    session = response.session!;
  }
  return session;
}

/**
 * What went wrong once a session settled, or undefined. An install this call
 * started that failed is reported first; then a FAILED session, with the
 * reason of its failed start-up install when there was one.
 */
export function settledError(session: SessionInfo, installStarted: boolean) {
  const install = session.lastInstall;
  const installFailed = install?.state === DependencyInstall_State.FAILED;
  const installReason = install?.errorReason || "DEPS_INSTALL_FAILED";
  const failure = session.stateMessage || install?.errorMessage || "the session failed";
  if (installStarted && installFailed) return sessionError(Code.FailedPrecondition, installReason, install.errorMessage, session);
  if (session.state !== Session_State.FAILED) return undefined;
  if (installFailed) return sessionError(Code.FailedPrecondition, installReason, failure, session);
  return sessionError(Code.Unavailable, "SANDBOX_START_FAILED", failure, session);
}
