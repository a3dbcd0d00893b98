/**
 * The TypeScript client against conformance/cases.json. Field semantics are
 * defined in conformance/README.md and shared with the Python, Go and Java
 * runners. Run through conformance/with_server.py, which starts a real
 * server and passes its address in CODEMODE_CONFORMANCE_TARGET.
 */
import { test } from "node:test";
import { readFileSync } from "node:fs";
import { randomBytes } from "node:crypto";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { isDeepStrictEqual } from "node:util";
import {
  CodemodeClient,
  CodemodeError,
  ExecutionStatus,
  OutputStream,
  type ExecutionError,
  type ExecutionFinished,
  type ExecutionOutput,
  type ExecutionResult,
  type Session,
} from "../src/index.js";

type Json = any; // eslint-disable-line @typescript-eslint/no-explicit-any

const RETRY_WHILE_BUSY_MS = 30_000;
const HERE = dirname(fileURLToPath(import.meta.url));
// dist-test/test → repository root
const CASES_PATH = join(HERE, "..", "..", "..", "..", "conformance", "cases.json");

const target = process.env.CODEMODE_CONFORMANCE_TARGET ?? "";
const token = process.env.CODEMODE_CONFORMANCE_TOKEN ?? "";

interface Observed {
  outputs: ExecutionOutput[];
  result?: ExecutionResult;
  error?: ExecutionError;
  finished?: ExecutionFinished;
  firstOutputAt?: number;
  finishedAt?: number;
  callError?: CodemodeError;
  cancelled: boolean;
}

function loadCases(): Json[] {
  const uid = "ts" + randomBytes(4).toString("hex");
  return JSON.parse(readFileSync(CASES_PATH, "utf8").replaceAll("${uid}", uid)).cases;
}

function fail(message: string): never {
  throw new Error(message);
}

// mTLS when the harness started the server with --mtls, else plaintext.
const tls = process.env.CODEMODE_CONFORMANCE_CA
  ? {
      ca: readFileSync(process.env.CODEMODE_CONFORMANCE_CA),
      cert: readFileSync(process.env.CODEMODE_CONFORMANCE_CLIENT_CERT ?? ""),
      key: readFileSync(process.env.CODEMODE_CONFORMANCE_CLIENT_KEY ?? ""),
    }
  : (false as const);

const clients = target
  ? {
      token: new CodemodeClient(target, { token, tls }),
      none: new CodemodeClient(target, { tls }),
      wrong: new CodemodeClient(target, { token: token + "-wrong", tls }),
    }
  : undefined;

for (const c of loadCases()) {
  test(c.name, async (t) => {
    if (!clients) {
      if (process.env.CI) fail("CODEMODE_CONFORMANCE_TARGET is required under CI (run via conformance/with_server.py)");
      t.skip("no server: run via `python conformance/with_server.py npm test`");
      return;
    }
    if (c.requires === "skills") {
      try {
        await clients.token.skills().search("probe", 1);
      } catch (error) {
        if (error instanceof CodemodeError && error.grpcCode === "UNIMPLEMENTED") {
          t.skip("the server does not implement SkillStoreService");
          return;
        }
        throw error;
      }
    }
    await runCase(clients, c);
  });
}

async function runCase(all: NonNullable<typeof clients>, c: Json): Promise<void> {
  const needsSession = c.steps.some((s: Json) => s.execute && !s.execute.session);
  // `await using` deletes the session however the case ends.
  await using session = needsSession
    ? await all.token.createSession({ outputBudgetBytes: BigInt(c.session?.output_budget_bytes ?? 0) })
    : undefined;
  for (const [index, step] of c.steps.entries()) {
    try {
      await runStep(all, session, step);
    } catch (error) {
      fail(`step ${index + 1} (${Object.keys(step)[0]}): ${(error as Error).message}`);
    }
  }
}

async function runStep(all: NonNullable<typeof clients>, session: Session | undefined, step: Json): Promise<void> {
  const expect = step.expect ?? {};
  if (step.execute) {
    checkExecute(await execute(all, session, step.execute), expect);
    return;
  }
  if (step.close_session) {
    await session!.close();
    return;
  }
  const skills = all.token.skills();
  let outcome: Json;
  try {
    if (step.create_skill) {
      const spec = step.create_skill;
      outcome = await skills.create(spec.id, spec.description ?? "", spec.source);
    } else if (step.update_skill) {
      const spec = step.update_skill;
      outcome = await skills.update(spec.id, spec.description, spec.source, spec.etag ?? "");
    } else if (step.get_skill) {
      outcome = await skills.get(step.get_skill.id);
    } else if (step.search_skills) {
      const names = (await skills.search(step.search_skills.query)).map((hit) => hit.skill?.name);
      if (expect.contains_name && !names.includes(expect.contains_name)) {
        fail(`${expect.contains_name} not in search results ${names}`);
      }
    } else if (step.delete_skill) {
      await skills.delete(step.delete_skill.id);
    } else {
      fail(`unknown step ${JSON.stringify(step)}`);
    }
  } catch (error) {
    if (error instanceof CodemodeError) {
      checkCallError(error, expect);
      return;
    }
    throw error;
  }
  if (expect.error_status) fail(`expected ${expect.error_status.code}, the call succeeded`);
  if (expect.name && outcome?.name !== expect.name) fail(`skill name ${outcome?.name}, want ${expect.name}`);
  if (expect.source_contains && !outcome?.source.includes(expect.source_contains)) {
    fail(`source ${JSON.stringify(outcome?.source)} lacks ${expect.source_contains}`);
  }
}

async function execute(all: NonNullable<typeof clients>, session: Session | undefined, spec: Json): Promise<Observed> {
  const client = all[(spec.auth ?? "token") as keyof typeof all];
  const handle = client.session(spec.session ?? session!.name);
  const giveUp = Date.now() + RETRY_WHILE_BUSY_MS;
  for (;;) {
    const observed = await executeOnce(handle, spec);
    const busy = observed.callError?.reason === "SESSION_BUSY";
    if (!(busy && spec.retry_while_busy && Date.now() < giveUp)) return observed;
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}

async function executeOnce(session: Session, spec: Json): Promise<Observed> {
  const observed: Observed = { outputs: [], cancelled: false };
  // The TypeScript way to cancel: abort an AbortSignal.
  const abort = new AbortController();
  const options = {
    signal: abort.signal,
    executionTimeoutMs: spec.execution_timeout_seconds !== undefined ? spec.execution_timeout_seconds * 1000 : undefined,
    timeoutMs: spec.call_deadline_seconds !== undefined ? spec.call_deadline_seconds * 1000 : undefined,
  };
  try {
    for await (const event of session.stream(spec.code, options)) {
      const now = performance.now();
      switch (event.event.case) {
        case "output":
          observed.outputs.push(event.event.value);
          observed.firstOutputAt ??= now;
          if (spec.cancel_after_first_output && !observed.cancelled) {
            observed.cancelled = true;
            abort.abort();
          }
          break;
        case "result":
          observed.result = event.event.value;
          break;
        case "error":
          observed.error = event.event.value;
          break;
        case "finished":
          observed.finished = event.event.value;
          observed.finishedAt = now;
          break;
      }
    }
  } catch (error) {
    if (!(error instanceof CodemodeError)) throw error;
    observed.callError = error;
  }
  return observed;
}

function checkCallError(error: CodemodeError, expect: Json): void {
  const wanted = expect.error_status;
  if (!wanted) fail(`unexpected call failure: ${error.message}`);
  if (error.grpcCode !== wanted.code) fail(`status ${error.grpcCode}, want ${wanted.code} (${error.message})`);
  if (wanted.reason !== undefined && error.reason !== wanted.reason) {
    fail(`reason ${JSON.stringify(error.reason)}, want ${JSON.stringify(wanted.reason)}`);
  }
}

function text(observed: Observed, stream: OutputStream): string {
  return Buffer.concat(observed.outputs.filter((o) => o.stream === stream).map((o) => o.data)).toString("utf8");
}

const streamName = (stream: OutputStream) => (stream === OutputStream.STDERR ? "stderr" : "stdout");

function checkExecute(observed: Observed, expect: Json): void {
  if (observed.callError) {
    if (expect.cancelled) {
      if (observed.callError.grpcCode !== "CANCELLED") fail(`cancel ended with ${observed.callError.message}`);
      return;
    }
    checkCallError(observed.callError, expect);
    return;
  }
  if (expect.error_status) fail(`expected ${expect.error_status.code}, the call succeeded`);
  if (expect.cancelled) {
    if (!observed.cancelled || observed.finished) fail("the call was not cancelled");
    return;
  }
  const finished = observed.finished ?? fail("no finished event");
  if (expect.status !== undefined) {
    const status = ExecutionStatus[finished.status];
    if (status !== expect.status) fail(`status ${status}, want ${expect.status} (${finished.message})`);
  }
  if (expect.value !== undefined) {
    const json = observed.result?.json ?? fail(`no JSON value (result ${JSON.stringify(observed.result)})`);
    if (!isDeepStrictEqual(JSON.parse(json), expect.value)) fail(`value ${json}, want ${JSON.stringify(expect.value)}`);
  }
  if (expect.value_repr !== undefined && observed.result?.repr !== expect.value_repr) {
    fail(`repr ${observed.result?.repr}, want ${expect.value_repr}`);
  }
  if (expect.no_value && observed.result) fail(`unexpected value ${observed.result.repr}`);
  const stdout = text(observed, OutputStream.STDOUT);
  const stderr = text(observed, OutputStream.STDERR);
  if (expect.stdout !== undefined && stdout !== expect.stdout) fail(`stdout ${JSON.stringify(stdout)}, want ${JSON.stringify(expect.stdout)}`);
  if (expect.stderr !== undefined && stderr !== expect.stderr) fail(`stderr ${JSON.stringify(stderr)}, want ${JSON.stringify(expect.stderr)}`);
  if (expect.stdout_ends_with !== undefined && !stdout.endsWith(expect.stdout_ends_with)) {
    fail(`stdout does not end with ${JSON.stringify(expect.stdout_ends_with)}`);
  }
  if (expect.output_order !== undefined) {
    const order: string[] = [];
    for (const output of observed.outputs) {
      const name = streamName(output.stream);
      if (order.at(-1) !== name) order.push(name);
    }
    if (!isDeepStrictEqual(order, expect.output_order)) fail(`output order ${order}, want ${expect.output_order}`);
  }
  if (expect.first_output_before_finished_seconds !== undefined) {
    if (observed.firstOutputAt === undefined || observed.finishedAt === undefined) fail("no output or no finished event");
    const gap = (observed.finishedAt - observed.firstOutputAt) / 1000;
    if (gap < expect.first_output_before_finished_seconds) fail(`first output only ${gap.toFixed(3)}s before finished`);
  }
  if (expect.error !== undefined) {
    const error = observed.error ?? fail("no error event");
    if (error.type !== expect.error.type) fail(`error type ${error.type}, want ${expect.error.type}`);
    if (expect.error.message_contains && !error.message.includes(expect.error.message_contains)) {
      fail(`error message ${JSON.stringify(error.message)}`);
    }
    for (const fragment of expect.error.traceback_contains ?? []) {
      if (!error.traceback.includes(fragment)) fail(`traceback lacks ${fragment}: ${error.traceback}`);
    }
  }
  if (expect.truncated !== undefined) {
    const { stream, total_bytes: total } = expect.truncated;
    const written = Number(stream === "stderr" ? finished.stderrBytes : finished.stdoutBytes);
    const dropped = Number(stream === "stderr" ? finished.stderrTruncatedBytes : finished.stdoutTruncatedBytes);
    const mine = observed.outputs.filter((o) => streamName(o.stream) === stream);
    const received = mine.reduce((sum, o) => sum + o.data.length, 0);
    const reported = mine.reduce((sum, o) => sum + Number(o.droppedBytesBefore), 0);
    if (written !== total) fail(`${stream}_bytes ${written}, want ${total}`);
    if (dropped === 0) fail("nothing reported as truncated");
    if (received + dropped !== total) fail(`received ${received} + truncated ${dropped} != ${total}`);
    if (reported !== dropped) fail(`dropped_bytes_before adds up to ${reported}, finished says ${dropped}`);
  }
}
