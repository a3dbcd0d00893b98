package dev.codemode.client;

import dev.codemode.v1.CreateSkillRequest;
import dev.codemode.v1.DeleteSkillRequest;
import dev.codemode.v1.GetSkillRequest;
import dev.codemode.v1.ListSkillsRequest;
import dev.codemode.v1.SearchSkillsRequest;
import dev.codemode.v1.SearchSkillsResponse;
import dev.codemode.v1.Skill;
import dev.codemode.v1.SkillStoreServiceGrpc;
import dev.codemode.v1.UpdateSkillRequest;
import io.grpc.StatusRuntimeException;
import java.util.ArrayList;
import java.util.List;
import java.util.function.Supplier;

/**
 * A tenant's library of reusable Python functions. Sandboxed code calls a skill as {@code await
 * skills.<name>(**kwargs)}.
 */
public final class Skills {
  private final SkillStoreServiceGrpc.SkillStoreServiceBlockingStub stub;
  private final String tenant;

  Skills(SkillStoreServiceGrpc.SkillStoreServiceBlockingStub stub, String tenant) {
    this.stub = stub;
    this.tenant = tenant;
  }

  /** "greet" → "skills/greet". */
  public static String skillName(String id) {
    return "skills/" + id;
  }

  /** Stores a new skill; {@code source} must define {@code async def run(...)}. */
  public Skill create(String id, String description, String source) {
    return call(
        () ->
            stub.createSkill(
                    CreateSkillRequest.newBuilder()
                        .setTenant(tenant)
                        .setSkillId(id)
                        .setSkill(Skill.newBuilder().setDescription(description).setSource(source))
                        .build())
                .getSkill());
  }

  /** The skill, source included. */
  public Skill get(String id) {
    return call(
        () ->
            stub.getSkill(GetSkillRequest.newBuilder().setTenant(tenant).setName(skillName(id)).build())
                .getSkill());
  }

  /** Every skill (without source), following pagination. */
  public List<Skill> list() {
    return call(
        () -> {
          List<Skill> all = new ArrayList<>();
          String token = "";
          do {
            var page =
                stub.listSkills(
                    ListSkillsRequest.newBuilder().setTenant(tenant).setPageToken(token).build());
            all.addAll(page.getSkillsList());
            token = page.getNextPageToken();
          } while (!token.isEmpty());
          return all;
        });
  }

  /**
   * One page of skills ranked by relevance to a natural-language query (results best first; the
   * ranker names the scorer). {@code pageSize} 0 means 10 (at most 100); {@code pageToken} is ""
   * for the first page, else a previous response's next_page_token, which is "" on the last page.
   */
  public SearchSkillsResponse search(String query, int pageSize, String pageToken) {
    return call(
        () ->
            stub.searchSkills(
                SearchSkillsRequest.newBuilder()
                    .setTenant(tenant)
                    .setQuery(query)
                    .setPageSize(pageSize)
                    .setPageToken(pageToken)
                    .build()));
  }

  /** Replaces description and source; a non-empty etag must match (ABORTED otherwise). */
  public Skill update(String id, String description, String source, String etag) {
    return call(
        () ->
            stub.updateSkill(
                    UpdateSkillRequest.newBuilder()
                        .setTenant(tenant)
                        .setSkill(
                            Skill.newBuilder()
                                .setName(skillName(id))
                                .setDescription(description)
                                .setSource(source)
                                .setEtag(etag))
                        .build())
                .getSkill());
  }

  public void delete(String id) {
    call(
        () ->
            stub.deleteSkill(
                DeleteSkillRequest.newBuilder().setTenant(tenant).setName(skillName(id)).build()));
  }

  private static <T> T call(Supplier<T> rpc) {
    try {
      return rpc.get();
    } catch (StatusRuntimeException e) {
      throw CodemodeException.from(e);
    }
  }
}
