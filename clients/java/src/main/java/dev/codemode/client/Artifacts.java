package dev.codemode.client;

import dev.codemode.v1.Artifact;
import dev.codemode.v1.ArtifactServiceGrpc;
import dev.codemode.v1.DeleteArtifactRequest;
import dev.codemode.v1.DownloadArtifactRequest;
import dev.codemode.v1.DownloadArtifactResponse;
import dev.codemode.v1.GetArtifactRequest;
import dev.codemode.v1.ListArtifactsRequest;
import dev.codemode.v1.UploadArtifactRequest;
import dev.codemode.v1.UploadArtifactResponse;
import com.google.protobuf.ByteString;
import io.grpc.Context;
import io.grpc.Status;
import io.grpc.StatusRuntimeException;
import io.grpc.stub.ClientCallStreamObserver;
import io.grpc.stub.ClientResponseObserver;
import java.io.ByteArrayInputStream;
import java.io.IOException;
import java.io.InputStream;
import java.io.OutputStream;
import java.util.ArrayList;
import java.util.Iterator;
import java.util.List;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.ExecutionException;
import java.util.function.Supplier;

/**
 * A tenant's store of named data that outlives sessions: bytes, text or JSON, with a type,
 * description and metadata. Sandboxed code reads the same artifacts as {@code
 * artifacts.load(name)}. Data always moves in chunks of at most 1 MiB, in both directions, so an
 * artifact is never held whole in memory by this class.
 */
public final class Artifacts {
  /** The most data one upload message carries; the server refuses larger chunks. */
  public static final int CHUNK_BYTES = 1024 * 1024;

  private final ArtifactServiceGrpc.ArtifactServiceBlockingStub stub;
  private final ArtifactServiceGrpc.ArtifactServiceStub asyncStub;
  private final String tenant;

  Artifacts(
      ArtifactServiceGrpc.ArtifactServiceBlockingStub stub,
      ArtifactServiceGrpc.ArtifactServiceStub asyncStub,
      String tenant) {
    this.stub = stub;
    this.asyncStub = asyncStub;
    this.tenant = tenant;
  }

  /** "report" → "artifacts/report". */
  public static String artifactName(String id) {
    return "artifacts/" + id;
  }

  /**
   * Stores what {@code data} yields under {@code id}, replacing any artifact of that name. It
   * streams (client streaming, with gRPC flow control): one chunk is read, sent and released at a
   * time, so {@code data} may be a file or a socket of any size the server accepts. The size is
   * declared first when known (see {@link ArtifactOptions#sizeBytes()}). If reading
   * {@code data} fails, the upload is cancelled (nothing is stored) and the exception rethrown.
   */
  public Artifact upload(String id, InputStream data, ArtifactOptions options) throws IOException {
    Artifact.Builder header =
        Artifact.newBuilder()
            .setName(artifactName(id))
            .setType(options.type())
            .setDescription(options.description());
    if (options.metadata() != null) {
      header.setMetadata(options.metadata());
    }
    UploadCall call = new UploadCall();
    asyncStub.uploadArtifact(call);
    try {
      long size = options.sizeBytes();
      if (size == 0 && data instanceof ByteArrayInputStream bytes) {
        size = bytes.available(); // exact for an in-memory stream
      }
      boolean open =
          call.send(
              UploadArtifactRequest.newBuilder().setTenant(tenant).setSizeBytes(size).setArtifact(header).build());
      while (open) {
        // readNBytes blocks until a whole chunk or the end, so only the last chunk is short.
        byte[] chunk = data.readNBytes(CHUNK_BYTES);
        if (chunk.length > 0) {
          open = call.send(UploadArtifactRequest.newBuilder().setChunk(ByteString.copyFrom(chunk)).build());
        }
        if (chunk.length < CHUNK_BYTES) {
          break;
        }
      }
    } catch (IOException | RuntimeException e) {
      // Cancelling is how a half-sent upload is abandoned: the server stores an artifact only
      // when the stream is closed normally.
      call.cancel(e);
      throw e;
    }
    return call.finish().getArtifact();
  }

  /**
   * Writes the artifact's data to {@code out} as its chunks arrive (server streaming) and returns
   * its metadata. If {@code out} fails, the download is cancelled and the exception rethrown; what
   * was written before stays written.
   */
  public Artifact download(String id, OutputStream out) throws IOException {
    // A context of our own lets a failed write cancel exactly this call.
    Context.CancellableContext context = Context.current().withCancellation();
    Context previous = context.attach();
    try {
      Iterator<DownloadArtifactResponse> responses =
          stub.downloadArtifact(
              DownloadArtifactRequest.newBuilder().setTenant(tenant).setName(artifactName(id)).build());
      Artifact artifact = null;
      while (responses.hasNext()) {
        DownloadArtifactResponse response = responses.next();
        switch (response.getPartCase()) {
          case ARTIFACT -> artifact = response.getArtifact();
          case CHUNK -> response.getChunk().writeTo(out);
          default -> {}
        }
      }
      if (artifact == null) {
        throw new IllegalStateException("codemode: the artifact download ended without the artifact's metadata");
      }
      return artifact;
    } catch (StatusRuntimeException e) {
      throw CodemodeException.from(e);
    } finally {
      context.detach(previous);
      context.cancel(null);
    }
  }

  /** The artifact's metadata (type, size, sha256, ...) without its data. */
  public Artifact get(String id) {
    return call(
        () ->
            stub.getArtifact(GetArtifactRequest.newBuilder().setTenant(tenant).setName(artifactName(id)).build())
                .getArtifact());
  }

  /** Every artifact's metadata, following pagination. */
  public List<Artifact> list() {
    return call(
        () -> {
          List<Artifact> all = new ArrayList<>();
          String token = "";
          do {
            var page =
                stub.listArtifacts(
                    ListArtifactsRequest.newBuilder().setTenant(tenant).setPageToken(token).build());
            all.addAll(page.getArtifactsList());
            token = page.getNextPageToken();
          } while (!token.isEmpty());
          return all;
        });
  }

  /** Removes the artifact (NOT_FOUND / ARTIFACT_NOT_FOUND when there is none). */
  public void delete(String id) {
    call(
        () ->
            stub.deleteArtifact(
                DeleteArtifactRequest.newBuilder().setTenant(tenant).setName(artifactName(id)).build()));
  }

  private static <T> T call(Supplier<T> rpc) {
    try {
      return rpc.get();
    } catch (StatusRuntimeException e) {
      throw CodemodeException.from(e);
    }
  }

  /**
   * One client-streaming upload driven from the caller's thread: {@link #send} waits while gRPC's
   * flow control says the transport is full, so a fast source never piles up in memory.
   */
  private static final class UploadCall
      implements ClientResponseObserver<UploadArtifactRequest, UploadArtifactResponse> {
    private final Object ready = new Object();
    private final CompletableFuture<UploadArtifactResponse> outcome = new CompletableFuture<>();
    private ClientCallStreamObserver<UploadArtifactRequest> requests;
    private UploadArtifactResponse response;

    @Override
    public void beforeStart(ClientCallStreamObserver<UploadArtifactRequest> requests) {
      this.requests = requests;
      requests.setOnReadyHandler(this::wake);
    }

    /** Sends one message; false when the server has already answered (an error, usually). */
    boolean send(UploadArtifactRequest message) {
      synchronized (ready) {
        while (!requests.isReady() && !outcome.isDone()) {
          try {
            // onReady wakes us; the timeout only bounds a wake-up lost to a race we cannot see.
            ready.wait(1000);
          } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
            throw interrupted(e);
          }
        }
      }
      if (outcome.isDone()) {
        return false;
      }
      requests.onNext(message);
      return true;
    }

    /** Half-closes the upload and waits for the server's answer. */
    UploadArtifactResponse finish() {
      if (!outcome.isDone()) {
        requests.onCompleted();
      }
      try {
        return outcome.get();
      } catch (ExecutionException e) {
        Throwable cause = e.getCause();
        if (cause instanceof StatusRuntimeException status) {
          throw CodemodeException.from(status);
        }
        throw CodemodeException.from(Status.fromThrowable(cause).asRuntimeException());
      } catch (InterruptedException e) {
        Thread.currentThread().interrupt();
        throw interrupted(e);
      }
    }

    void cancel(Throwable cause) {
      requests.cancel("the upload's data source failed", cause);
    }

    private CodemodeException interrupted(InterruptedException e) {
      requests.cancel("interrupted", e);
      return CodemodeException.from(
          Status.CANCELLED.withDescription("interrupted while uploading").withCause(e).asRuntimeException());
    }

    private void wake() {
      synchronized (ready) {
        ready.notifyAll();
      }
    }

    @Override
    public void onNext(UploadArtifactResponse value) {
      response = value;
    }

    @Override
    public void onError(Throwable t) {
      outcome.completeExceptionally(t);
      wake();
    }

    @Override
    public void onCompleted() {
      outcome.complete(response);
      wake();
    }
  }
}
