import type { Client } from "@connectrpc/connect";
import type { JsonObject, MessageInitShape } from "@bufbuild/protobuf";
import {
  ArtifactService,
  ArtifactType,
  type Artifact,
  type DownloadArtifactResponse,
  type UploadArtifactRequestSchema,
} from "./gen/codemode/v1/artifact_pb.js";
import type { CallOptions } from "./client.js";
import { call, toCodemodeError } from "./errors.js";

/** The most data one upload message carries; the server refuses larger chunks. */
export const ARTIFACT_CHUNK_BYTES = 1024 * 1024;

/** "report" → "artifacts/report". */
export function artifactName(id: string): string {
  return `artifacts/${id}`;
}

/**
 * What `upload` accepts: the data whole, or as chunks of any size from a
 * (async) iterable, e.g. a Node `Readable` such as `fs.createReadStream(path)`.
 */
export type ArtifactData = Uint8Array | string | Iterable<Uint8Array> | AsyncIterable<Uint8Array>;

export interface UploadOptions extends CallOptions {
  /**
   * How the data is read back: `ArtifactType.TEXT` (UTF-8), `ArtifactType.JSON`
   * (a UTF-8 JSON document) or `ArtifactType.BYTES`. Default: TEXT for a
   * string, BYTES otherwise.
   */
  type?: ArtifactType;
  description?: string;
  metadata?: JsonObject;
  /**
   * How many bytes `data` holds, declared before the data so the server
   * refuses an artifact over its limit (ARTIFACT_TOO_LARGE) before any is
   * sent. Found by itself for a string or Uint8Array; for an iterable, give
   * it when known. A size the data does not match fails the upload
   * (INVALID_ARGUMENT) and nothing is stored.
   */
  sizeBytes?: number | bigint;
}

/**
 * A tenant's store of named data that outlives sessions: bytes, text or
 * JSON, with a type, description and metadata. Sandboxed code reads the same
 * artifacts as `artifacts.load(name)`. Data always moves in chunks of at most
 * 1 MiB, in both directions.
 */
export class Artifacts {
  constructor(
    private readonly client: Client<typeof ArtifactService>,
    private readonly tenant: string,
  ) {}

  /**
   * Stores `data` under `id`, replacing any artifact of that name. Chunks
   * are sent as `data` yields them (client streaming), so a stream is never
   * held whole in memory. If `data` fails, the upload is cancelled (nothing
   * is stored) and its error rethrown.
   */
  async upload(id: string, data: ArtifactData, options: UploadOptions = {}): Promise<Artifact> {
    const type = options.type ?? (typeof data === "string" ? ArtifactType.TEXT : ArtifactType.BYTES);
    if (typeof data === "string") data = new TextEncoder().encode(data);
    const sizeBytes = options.sizeBytes ?? (data instanceof Uint8Array ? data.length : 0);
    const header: MessageInitShape<typeof UploadArtifactRequestSchema> = {
      tenant: this.tenant,
      sizeBytes: BigInt(sizeBytes),
      part: {
        case: "artifact",
        value: { name: artifactName(id), type, description: options.description ?? "", metadata: options.metadata },
      },
    };
    // Cancelling is how a half-sent upload is abandoned: the server stores an
    // artifact only when the stream ends normally.
    const abort = linkedAbort(options.signal);
    let sourceError: { error: unknown } | undefined;
    const source = data;
    async function* requests(): AsyncGenerator<MessageInitShape<typeof UploadArtifactRequestSchema>> {
      yield header;
      try {
        for await (const chunk of chunked(source)) yield { part: { case: "chunk", value: chunk } };
      } catch (error) {
        sourceError = { error };
        abort.abort();
      }
    }
    try {
      const response = await this.client.uploadArtifact(requests(), { signal: abort.signal, timeoutMs: options.timeoutMs });
      return response.artifact!;
    } catch (error) {
      if (sourceError) throw sourceError.error;
      throw toCodemodeError(error);
    } finally {
      abort.release();
    }
  }

  /**
   * Starts a download and resolves with the artifact's metadata once the
   * server sent it; the data then streams from the returned download (read
   * it once: iterate its chunks, or `bytes()`, `text()`, `json()`). An
   * unread download holds its stream: `cancel()` it, or `await using`.
   */
  async download(id: string, options: CallOptions = {}): Promise<ArtifactDownload> {
    const abort = linkedAbort(options.signal);
    const responses = this.client.downloadArtifact(
      { tenant: this.tenant, name: artifactName(id) },
      { signal: abort.signal, timeoutMs: options.timeoutMs },
    )[Symbol.asyncIterator]();
    let first: IteratorResult<DownloadArtifactResponse>;
    try {
      first = await responses.next();
    } catch (error) {
      abort.cancel();
      throw toCodemodeError(error);
    }
    if (first.done || first.value.part.case !== "artifact") {
      abort.cancel();
      throw new Error("codemode: the artifact download did not start with the artifact's metadata");
    }
    return new ArtifactDownload(first.value.part.value, responses, abort.cancel);
  }

  /** The artifact's metadata (type, size, sha256, ...) without its data. */
  async get(id: string, options: CallOptions = {}): Promise<Artifact> {
    return call(async () => (await this.client.getArtifact({ tenant: this.tenant, name: artifactName(id) }, options)).artifact!);
  }

  /** Every artifact's metadata, following pagination. */
  async list(options: CallOptions = {}): Promise<Artifact[]> {
    return call(async () => {
      const all: Artifact[] = [];
      let pageToken = "";
      do {
        const page = await this.client.listArtifacts({ tenant: this.tenant, pageToken }, options);
        all.push(...page.artifacts);
        pageToken = page.nextPageToken;
      } while (pageToken);
      return all;
    });
  }

  /** Removes the artifact (NOT_FOUND / ARTIFACT_NOT_FOUND when there is none). */
  async delete(id: string, options: CallOptions = {}): Promise<void> {
    await call(() => this.client.deleteArtifact({ tenant: this.tenant, name: artifactName(id) }, options));
  }
}

/** An artifact being downloaded: its metadata now, its data as the chunks arrive. */
export class ArtifactDownload implements AsyncIterable<Uint8Array>, AsyncDisposable {
  private consumed = false;

  constructor(
    /** The artifact's metadata, as the server sent it before the data. */
    readonly artifact: Artifact,
    private readonly responses: AsyncIterator<DownloadArtifactResponse>,
    private readonly stop: () => void,
  ) {}

  /** The data's chunks (server streaming), each at most 1 MiB. Readable once. */
  async *[Symbol.asyncIterator](): AsyncGenerator<Uint8Array, void, undefined> {
    if (this.consumed) throw new Error("codemode: an artifact download can be read only once");
    this.consumed = true;
    try {
      for (;;) {
        const next = await this.responses.next();
        if (next.done) return;
        if (next.value.part.case === "chunk") yield next.value.part.value;
      }
    } catch (error) {
      throw toCodemodeError(error);
    } finally {
      this.stop();
    }
  }

  /** All the data. */
  async bytes(): Promise<Uint8Array> {
    const chunks: Uint8Array[] = [];
    for await (const chunk of this) chunks.push(chunk);
    return Buffer.concat(chunks);
  }

  /** The data decoded as UTF-8. */
  async text(): Promise<string> {
    return Buffer.from(await this.bytes()).toString("utf8");
  }

  /** The data parsed as JSON. */
  async json(): Promise<unknown> {
    return JSON.parse(await this.text());
  }

  /** Stops the download; chunks not yet read are dropped. */
  cancel(): void {
    this.consumed = true;
    this.stop();
  }

  async [Symbol.asyncDispose](): Promise<void> {
    this.cancel();
  }
}

/**
 * Any ArtifactData as chunks of exactly ARTIFACT_CHUNK_BYTES (the last one
 * shorter): small pieces are gathered so a stream of tiny writes does not
 * become a message per write, and memory stays within about one chunk.
 */
async function* chunked(data: ArtifactData): AsyncGenerator<Uint8Array> {
  if (typeof data === "string") data = new TextEncoder().encode(data);
  // A Uint8Array is itself iterable (of numbers): it is sliced, never copied.
  if (data instanceof Uint8Array) {
    for (let offset = 0; offset < data.length; offset += ARTIFACT_CHUNK_BYTES) {
      yield data.subarray(offset, offset + ARTIFACT_CHUNK_BYTES);
    }
    return;
  }
  let pending: Uint8Array[] = [];
  let size = 0;
  for await (const piece of data) {
    pending.push(piece);
    size += piece.length;
    if (size < ARTIFACT_CHUNK_BYTES) continue;
    const joined = pending.length === 1 ? pending[0]! : Buffer.concat(pending, size);
    let offset = 0;
    for (; joined.length - offset >= ARTIFACT_CHUNK_BYTES; offset += ARTIFACT_CHUNK_BYTES) {
      yield joined.subarray(offset, offset + ARTIFACT_CHUNK_BYTES);
    }
    pending = offset < joined.length ? [joined.subarray(offset)] : [];
    size = joined.length - offset;
  }
  if (size > 0) yield pending.length === 1 ? pending[0]! : Buffer.concat(pending, size);
}

/**
 * An AbortController of our own that also follows the caller's signal, so
 * one call can be cancelled without touching the caller's controller.
 */
function linkedAbort(signal: AbortSignal | undefined) {
  const controller = new AbortController();
  const follow = () => controller.abort(signal?.reason);
  if (signal?.aborted) follow();
  signal?.addEventListener("abort", follow, { once: true });
  const release = () => signal?.removeEventListener("abort", follow);
  return {
    signal: controller.signal,
    abort: () => controller.abort(),
    release,
    cancel: () => {
      release();
      controller.abort();
    },
  };
}
