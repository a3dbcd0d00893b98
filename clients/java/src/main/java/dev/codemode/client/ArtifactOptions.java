package dev.codemode.client;

import com.google.protobuf.Struct;
import dev.codemode.v1.ArtifactType;

/**
 * The fields of an artifact being uploaded.
 *
 * @param type how the data is read back: {@code ARTIFACT_TYPE_TEXT} (UTF-8), {@code
 *     ARTIFACT_TYPE_JSON} (a UTF-8 JSON document) or {@code ARTIFACT_TYPE_BYTES}
 * @param description human-readable description, "" for none
 * @param metadata JSON-like metadata, or null for none
 * @param sizeBytes how many bytes the data holds, declared before the data so the server refuses an
 *     artifact over its limit (ARTIFACT_TOO_LARGE) before any is sent; 0 when unknown (found by
 *     itself for a {@link java.io.ByteArrayInputStream}). A size the data does not match fails the
 *     upload (INVALID_ARGUMENT) and nothing is stored.
 */
public record ArtifactOptions(ArtifactType type, String description, Struct metadata, long sizeBytes) {
  public static final ArtifactOptions BYTES = new ArtifactOptions(ArtifactType.ARTIFACT_TYPE_BYTES, "", null, 0);

  public static ArtifactOptions type(ArtifactType type) {
    return new ArtifactOptions(type, "", null, 0);
  }

  public ArtifactOptions withDescription(String description) {
    return new ArtifactOptions(type, description, metadata, sizeBytes);
  }

  public ArtifactOptions withMetadata(Struct metadata) {
    return new ArtifactOptions(type, description, metadata, sizeBytes);
  }

  public ArtifactOptions withSizeBytes(long sizeBytes) {
    return new ArtifactOptions(type, description, metadata, sizeBytes);
  }
}
