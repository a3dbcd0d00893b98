/**
 * The TypeScript client against conformance/cases.json. Field semantics are
 * defined in conformance/README.md and shared with the Python, Go and Java
 * runners. Run through conformance/with_server.py, which starts a real
 * server and passes its address in CODEMODE_CONFORMANCE_TARGET.
 */
import { after, test } from "node:test";
import { readFileSync } from "node:fs";
import { createHash, randomBytes } from "node:crypto";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { isDeepStrictEqual } from "node:util";
import { ConnectError } from "@connectrpc/connect";
import {
  ArtifactType,
  CodemodeClient,
  CodemodeError,
  ExecutionStatus,
  OutputStream,
  type Artifact,
  type ExecutionError,
  type ExecutionFinished,
  type ExecutionOutput,
  type ExecutionResult,
  type ExecuteResponse,
  type Session,
  Session_State,
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
  /** How many output events had arrived when the result event did. */
  outputsBeforeResult?: number;
  callError?: CodemodeError;
  cancelled: boolean;
  /** The name from the started event, and every non-heartbeat event in order. */
  execution: string;
  events: Signed[];
  /** What attach_after_outputs read, after `attachedAfter`. */
  attached: Signed[];
  attachedAfter: bigint;
  /** A failed CancelExecution or AttachExecution made mid-stream. */
  sideError?: Error;
}

/** One non-heartbeat event as the cases compare it (conformance/README.md, "Event signatures"). */
interface Signed {
  sequence: bigint;
  signature: string;
}

function signature(event: ExecuteResponse): string {
  const e = event.event;
  switch (e.case) {
    case "started":
      return `started ${e.value.execution}`;
    case "output":
      return `output ${streamName(e.value.stream)} ${Buffer.from(e.value.data).toString("latin1")}`;
    case "result":
      return `result ${JSON.stringify(e.value.json ?? "")} ${JSON.stringify(e.value.repr)}`;
    case "error":
      return `error ${e.value.type} ${e.value.message}`;
    case "finished":
      return `finished ${ExecutionStatus[e.value.status]}`;
  }
  return `unknown ${e.case}`;
}

/** What a case's later steps need from earlier ones (conformance/README.md, "The last execution"). */
interface CaseState {
  session?: Session;
  lastExecution: string;
  lastEvents: Signed[];
}

/** A cases.json session spec as a SessionConfig: absent keys stay unset, present ones are sent even when false. */
function sessionConfig(spec: Json) {
  const config: Json = {};
  if (spec?.output_budget_bytes !== undefined) config.outputBudgetBytes = BigInt(spec.output_budget_bytes);
  if (spec?.deps !== undefined) config.deps = spec.deps;
  if (spec?.allow_runtime_deps !== undefined) config.allowRuntimeDeps = spec.allow_runtime_deps;
  if (spec?.sync_deps_on_start !== undefined) config.syncDepsOnStart = spec.sync_deps_on_start;
  return config;
}

function loadCases(principal: string): Json[] {
  const uid = "ts" + principal + randomBytes(4).toString("hex");
  return JSON.parse(readFileSync(CASES_PATH, "utf8").replaceAll("${uid}", uid)).cases;
}

function fail(message: string): never {
  throw new Error(message);
}

type Clients = Record<"principal" | "none" | "wrong" | "other_tenant", CodemodeClient>;

const ca = process.env.CODEMODE_CONFORMANCE_CA;
/** TLS presenting the named client certificate when the harness started the server with --mtls, else plaintext. */
function tls(certificate: "CLIENT" | "UNMAPPED") {
  if (!ca) return false as const;
  return {
    ca: readFileSync(ca),
    cert: readFileSync(process.env[`CODEMODE_CONFORMANCE_${certificate}_CERT`] ?? ""),
    key: readFileSync(process.env[`CODEMODE_CONFORMANCE_${certificate}_KEY`] ?? ""),
  };
}

/** The `auth` clients of one principal's run (conformance/README.md, "Principals"). */
function principalClients(principal: string): Clients {
  const own = tls(principal === "mtls" ? "CLIENT" : "UNMAPPED");
  return {
    principal: new CodemodeClient(target, { token: principal === "mtls" ? "" : token, tls: own }),
    none: new CodemodeClient(target, { tls: tls("UNMAPPED") }),
    wrong: new CodemodeClient(target, { token: token + "-wrong", tls: own }),
    other_tenant: new CodemodeClient(target, { token: process.env.CODEMODE_CONFORMANCE_OTHER_TOKEN ?? "", tls: tls("UNMAPPED") }),
  };
}

// Every case as the token principal and, over mTLS, as the mTLS principal.
const principals = ca ? ["token", "mtls"] : ["token"];
const runs = target ? principals.map((principal) => ({ principal, clients: principalClients(principal) })) : [{ principal: "token", clients: undefined }];

after(async () => {
  for (const run of runs) for (const client of Object.values(run.clients ?? {})) await client.close();
});

for (const { principal, clients } of runs) for (const c of loadCases(principal)) {
  test(`${principal}/${c.name}`, async (t) => {
    if (!clients) {
      if (process.env.CI) fail("CODEMODE_CONFORMANCE_TARGET is required under CI (run via conformance/with_server.py)");
      t.skip("no server: run via `python conformance/with_server.py npm test`");
      return;
    }
    if (c.requires === "skills") {
      try {
        await clients.principal.skills().search("probe", 1, "");
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

const SESSION_STEPS = [
  "list_dependencies", "add_dependency", "get_session", "delete_session", "list_sessions", "attach_execution", "cancel_execution",
];

async function runCase(all: Clients, c: Json): Promise<void> {
  const needsSession = c.steps.some((s: Json) => (s.execute && !s.execute.session) || SESSION_STEPS.some((kind) => kind in s));
  // `await using` deletes the session however the case ends; createSession waits until it is READY.
  await using session = needsSession ? await all.principal.createSession(sessionConfig(c.session)) : undefined;
  const state: CaseState = { session, lastExecution: "", lastEvents: [] };
  for (const [index, step] of c.steps.entries()) {
    try {
      await runStep(all, state, step);
    } catch (error) {
      fail(`step ${index + 1} (${Object.keys(step)[0]}): ${(error as Error).message}`);
    }
  }
}

/** The generated stubs' errors as the client's own, for the calls it does not wrap. */
async function raw<T>(call: () => Promise<T>): Promise<T> {
  try {
    return await call();
  } catch (error) {
    throw error instanceof ConnectError ? new CodemodeError(error) : error;
  }
}

function checkNames(names: (string | undefined)[], expect: Json, what: string): void {
  if (expect.contains_name && !names.includes(expect.contains_name)) fail(`${expect.contains_name} not in ${what} ${names}`);
  if (expect.lacks_name && names.includes(expect.lacks_name)) fail(`${expect.lacks_name} in ${what} ${names}`);
}

async function runStep(all: Clients, state: CaseState, step: Json): Promise<void> {
  const session = state.session;
  const expect = step.expect ?? {};
  const client = all[(step.auth ?? "principal") as keyof Clients];
  const tenant: string = step.tenant ?? "";
  if (step.execute) {
    const observed = await execute(client, session, step.execute);
    try {
      checkExecute(observed, expect, state, 0n);
    } finally {
      if (observed.execution) [state.lastExecution, state.lastEvents] = [observed.execution, observed.events];
    }
    return;
  }
  if (step.attach_execution) {
    const spec = step.attach_execution;
    const name = spec.execution_id ? `${session!.name}/executions/${spec.execution_id}` : state.lastExecution;
    const after = BigInt(spec.after_sequence ?? 0);
    // The TypeScript way to attach: iterate the same event stream `stream` returns.
    checkExecute(await observe(client, client.attachExecution(name, after), {}, new AbortController()), expect, state, after);
    return;
  }
  if (step.close_session) {
    await session!.close();
    return;
  }
  if (step.plaintext_client) {
    checkPlaintextClient(step.plaintext_client.target, expect);
    return;
  }
  const skills = client.skills(tenant);
  const artifacts = client.artifacts(tenant);
  let outcome: Json;
  try {
    // The client wraps no GetSession/ListSessions, and Session.close() forgives
    // NOT_FOUND: the session steps call the generated stub it exposes.
    if (step.get_session) {
      const info = (await raw(() => client.sessionService.getSession({ name: session!.name }))).session;
      if (expect.error_status) fail(`expected ${expect.error_status.code}, the call succeeded`);
      if (expect.session_tenant !== undefined && info?.tenant !== expect.session_tenant) {
        fail(`session tenant ${JSON.stringify(info?.tenant)}, want ${JSON.stringify(expect.session_tenant)}`);
      }
      const sessionState = Session_State[info?.state ?? 0];
      if (expect.session_state !== undefined && sessionState !== expect.session_state) {
        fail(`session state ${sessionState}, want ${expect.session_state} (${info?.stateMessage})`);
      }
      return;
    } else if (step.create_session) {
      await using created = await client.createSession(sessionConfig(step.create_session));
      if (expect.error_status) fail(`expected ${expect.error_status.code}, the call succeeded`);
      if (created.info?.state !== Session_State.READY) fail(`createSession returned a ${Session_State[created.info?.state ?? 0]} session`);
      return;
    } else if (step.cancel_execution) {
      const cancelled = await client.cancelExecution(state.lastExecution);
      if (expect.error_status) fail(`expected ${expect.error_status.code}, the call succeeded`);
      if (expect.execution_cancelled !== undefined && cancelled !== expect.execution_cancelled) {
        fail(`cancelled ${cancelled}, want ${expect.execution_cancelled}`);
      }
      return;
    } else if (step.delete_session) {
      await raw(() => client.sessionService.deleteSession({ name: session!.name }));
    } else if (step.list_sessions) {
      const names: string[] = [];
      let pageToken = "";
      do {
        const page = await raw(() => client.sessionService.listSessions({ tenant, pageToken }));
        names.push(...page.sessions.map((listed) => listed.name));
        pageToken = page.nextPageToken;
      } while (pageToken);
      if (expect.error_status) fail(`expected ${expect.error_status.code}, the call succeeded`);
      const listed = names.includes(session!.name);
      if (expect.lists_case_session !== undefined && listed !== expect.lists_case_session) {
        fail(`case session ${session!.name} listed: ${listed} (${names})`);
      }
      return;
    } else if (step.upload_artifact) {
      const spec = step.upload_artifact;
      // The TypeScript way to stream an upload: any (async) iterable of chunks.
      const piece = Buffer.from(spec.data, "utf8");
      const data = (function* () {
        for (let i = 0; i < (spec.repeat ?? 1); i++) yield piece;
      })();
      const type = ArtifactType[spec.type as keyof typeof ArtifactType];
      checkArtifact(await artifacts.upload(spec.id, data, { type, description: spec.description ?? "" }), expect);
      return;
    } else if (step.get_artifact) {
      checkArtifact(await artifacts.get(step.get_artifact.id), expect);
      return;
    } else if (step.download_artifact) {
      // The TypeScript way to stream a download: iterate its chunks.
      await using download = await artifacts.download(step.download_artifact.id);
      const chunks: Uint8Array[] = [];
      for await (const chunk of download) chunks.push(chunk);
      checkArtifact(download.artifact, expect);
      checkDownloaded(download.artifact, Buffer.concat(chunks), expect);
      return;
    } else if (step.list_artifacts) {
      checkNames((await artifacts.list()).map((artifact) => artifact.name), expect, "artifacts");
    } else if (step.delete_artifact) {
      await artifacts.delete(step.delete_artifact.id);
    } else if (step.list_dependencies) {
      checkDependencies(await session!.deps.list(), expect);
      return;
    } else if (step.add_dependency) {
      checkDependencies((await session!.deps.add(step.add_dependency.package)).dependencies, expect);
      return;
    } else if (step.create_skill) {
      const spec = step.create_skill;
      outcome = await skills.create(spec.id, spec.description ?? "", spec.source);
    } else if (step.update_skill) {
      const spec = step.update_skill;
      outcome = await skills.update(spec.id, spec.description, spec.source, spec.etag ?? "");
    } else if (step.get_skill) {
      outcome = await skills.get(step.get_skill.id);
    } else if (step.search_skills) {
      checkNames((await skills.search(step.search_skills.query)).results.map((hit) => hit.skill?.name), expect, "search results");
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

async function execute(client: CodemodeClient, session: Session | undefined, spec: Json): Promise<Observed> {
  const handle = client.session(spec.session ?? session!.name);
  const giveUp = Date.now() + RETRY_WHILE_BUSY_MS;
  for (;;) {
    const observed = await executeOnce(client, handle, spec);
    const busy = observed.callError?.reason === "SESSION_BUSY";
    if (!(busy && spec.retry_while_busy && Date.now() < giveUp)) return observed;
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}

async function executeOnce(client: CodemodeClient, session: Session, spec: Json): Promise<Observed> {
  // The TypeScript way to cancel: abort an AbortSignal.
  const abort = new AbortController();
  const options = {
    signal: abort.signal,
    executionTimeoutMs: spec.execution_timeout_seconds !== undefined ? spec.execution_timeout_seconds * 1000 : undefined,
    timeoutMs: spec.call_deadline_seconds !== undefined ? spec.call_deadline_seconds * 1000 : undefined,
    requestId: spec.request_id,
  };
  return observe(client, session.stream(spec.code, options), spec, abort);
}

/** Reads an execution stream (Execute or AttachExecution) to its end; `spec` says what to do mid-stream. */
async function observe(client: CodemodeClient, events: AsyncIterable<ExecuteResponse>, spec: Json, abort: AbortController): Promise<Observed> {
  const observed: Observed = { outputs: [], cancelled: false, execution: "", events: [], attached: [], attachedAfter: 0n };
  let lastSequence = 0n;
  try {
    for await (const event of events) {
      const now = performance.now();
      // Any event, a heartbeat too, carries the sequence to resume after.
      lastSequence = event.sequence;
      if (event.event.case !== "heartbeat") observed.events.push({ sequence: event.sequence, signature: signature(event) });
      switch (event.event.case) {
        case "started":
          observed.execution = event.event.value.execution;
          break;
        case "output":
          observed.outputs.push(event.event.value);
          observed.firstOutputAt ??= now;
          if (spec.cancel_after_first_output && !observed.cancelled) {
            observed.cancelled = true;
            abort.abort();
          }
          if (spec.cancel_execution_after_first_output && observed.outputs.length === 1) {
            await client.cancelExecution(observed.execution).catch((error) => (observed.sideError = error));
          }
          if (spec.attach_after_outputs && observed.outputs.length === spec.attach_after_outputs) {
            // A second stream on the same execution while this one stays open.
            observed.attachedAfter = lastSequence;
            try {
              for await (const attached of client.attachExecution(observed.execution, lastSequence)) {
                if (attached.event.case !== "heartbeat") observed.attached.push({ sequence: attached.sequence, signature: signature(attached) });
              }
            } catch (error) {
              observed.sideError = error as Error;
            }
          }
          break;
        case "result":
          observed.result = event.event.value;
          observed.outputsBeforeResult = observed.outputs.length;
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

/** Sequences after+1, after+2, ... with no gap or repeat. */
function checkContiguous(events: Signed[], after: bigint, what: string): void {
  events.forEach((event, index) => {
    const want = after + BigInt(index) + 1n;
    if (event.sequence !== want) fail(`${what}: event ${index} has sequence ${event.sequence}, want ${want}`);
  });
}

/** `got` has the signatures of `want`'s events above `after`. */
function checkSameEvents(got: Signed[], want: Signed[], after: bigint, what: string): void {
  const tail = want.filter((event) => event.sequence > after);
  if (!isDeepStrictEqual(got, tail)) fail(`${what}: events ${describe(got)}, want ${describe(tail)}`);
}

const describe = (events: Signed[]) => JSON.stringify(events.map((e) => `${e.sequence}:${e.signature}`));

function checkCallError(error: CodemodeError, expect: Json): void {
  const wanted = expect.error_status;
  if (!wanted) fail(`unexpected call failure: ${error.message}`);
  if (error.grpcCode !== wanted.code) fail(`status ${error.grpcCode}, want ${wanted.code} (${error.message})`);
  if (wanted.reason !== undefined && error.reason !== wanted.reason) {
    fail(`reason ${JSON.stringify(error.reason)}, want ${JSON.stringify(wanted.reason)}`);
  }
  // The client's typed accessors, not the raw status: RetryInfo and BadRequest as it decodes them.
  if (wanted.retry_delay_seconds !== undefined) {
    if (error.retryDelayMs === undefined) fail(`no retry delay (RetryInfo) in ${error.message}`);
    if (Math.round(error.retryDelayMs * 1e6) !== Math.round(wanted.retry_delay_seconds * 1e9)) {
      fail(`retry delay ${error.retryDelayMs} ms, want ${wanted.retry_delay_seconds * 1000} ms`);
    }
  }
  if (wanted.field_violation !== undefined) {
    const fields = error.fieldViolations.map((violation) => violation.field);
    if (!fields.includes(wanted.field_violation)) {
      fail(`field violations ${JSON.stringify(fields)} lack ${JSON.stringify(wanted.field_violation)}`);
    }
  }
}

function checkArtifact(artifact: Artifact, expect: Json): void {
  if (expect.error_status) fail(`expected ${expect.error_status.code}, the call succeeded`);
  const got: Json = {
    name: artifact.name,
    type: ArtifactType[artifact.type],
    description: artifact.description,
    size_bytes: Number(artifact.sizeBytes),
    sha256: artifact.sha256,
  };
  for (const [key, value] of Object.entries(expect.artifact ?? {})) {
    if (got[key] !== value) fail(`artifact ${key} ${JSON.stringify(got[key])}, want ${JSON.stringify(value)}`);
  }
}

function checkDownloaded(artifact: Artifact, data: Buffer, expect: Json): void {
  if (expect.data_sha256 !== undefined) {
    const digest = createHash("sha256").update(data).digest("hex");
    if (digest !== expect.data_sha256) fail(`downloaded ${data.length} bytes with sha256 ${digest}`);
    if (artifact.sha256 !== digest) fail(`artifact sha256 ${artifact.sha256} differs from the data's ${digest}`);
  }
  if (expect.data_json !== undefined && !isDeepStrictEqual(JSON.parse(data.toString("utf8")), expect.data_json)) {
    fail(`downloaded ${data.toString("utf8").slice(0, 200)}, want ${JSON.stringify(expect.data_json)}`);
  }
}

function checkDependencies(dependencies: string[], expect: Json): void {
  if (expect.error_status) fail(`expected ${expect.error_status.code}, the call succeeded`);
  if (expect.dependencies !== undefined && !isDeepStrictEqual(dependencies, expect.dependencies)) {
    fail(`dependencies ${JSON.stringify(dependencies)}, want ${JSON.stringify(expect.dependencies)}`);
  }
}

function checkPlaintextClient(plaintextTarget: string, expect: Json): void {
  let client: CodemodeClient;
  try {
    client = new CodemodeClient(plaintextTarget, { token, tls: false });
  } catch (error) {
    if (expect.refused_contains === undefined) fail(`plaintext client to ${plaintextTarget} refused: ${(error as Error).message}`);
    if (!(error as Error).message.includes(expect.refused_contains)) {
      fail(`refusal ${JSON.stringify((error as Error).message)} lacks ${JSON.stringify(expect.refused_contains)}`);
    }
    return;
  }
  void client.close();
  if (expect.refused_contains !== undefined) fail(`a plaintext client with a token to ${plaintextTarget} was allowed`);
}

function text(observed: Observed, stream: OutputStream): string {
  return Buffer.concat(observed.outputs.filter((o) => o.stream === stream).map((o) => o.data)).toString("utf8");
}

const streamName = (stream: OutputStream) => (stream === OutputStream.STDERR ? "stderr" : "stdout");

function checkExecute(observed: Observed, expect: Json, state: CaseState, after: bigint): void {
  if (observed.sideError) fail(`mid-stream call failed: ${observed.sideError.message}`);
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
  if (expect.outputs_before_result_at_least !== undefined) {
    const before = observed.outputsBeforeResult ?? fail("no result event");
    if (before < expect.outputs_before_result_at_least) fail(`only ${before} output events before the result`);
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
  if (expect.contiguous_sequences) checkContiguous(observed.events, after, "stream");
  if (expect.same_events_as_last_execution) {
    if (!state.lastExecution) fail("no earlier execution to compare with");
    checkSameEvents(observed.events, state.lastEvents, after, "stream");
  }
  if (expect.attach_matches_stream) {
    if (observed.attached.length === 0) fail("the attached stream had no events");
    checkContiguous(observed.attached, observed.attachedAfter, "attached stream");
    checkSameEvents(observed.attached, observed.events, observed.attachedAfter, "attached stream");
  }
}
