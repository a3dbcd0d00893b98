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
 */
public record ArtifactOptions(ArtifactType type, String description, Struct metadata) {
  public static final ArtifactOptions BYTES = new ArtifactOptions(ArtifactType.ARTIFACT_TYPE_BYTES, "", null);

  public static ArtifactOptions type(ArtifactType type) {
    return new ArtifactOptions(type, "", null);
  }

  public ArtifactOptions withDescription(String description) {
    return new ArtifactOptions(type, description, metadata);
  }

  public ArtifactOptions withMetadata(Struct metadata) {
    return new ArtifactOptions(type, description, metadata);
  }
}
