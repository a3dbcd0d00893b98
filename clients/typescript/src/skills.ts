import type { Client } from "@connectrpc/connect";
import type { SearchSkillsResponse, Skill } from "./gen/codemode/v1/skill_pb.js";
import { SkillStoreService } from "./gen/codemode/v1/skill_pb.js";
import type { CallOptions } from "./client.js";
import { call } from "./errors.js";

/** "greet" → "skills/greet". */
export function skillName(id: string): string {
  return `skills/${id}`;
}

/**
 * A tenant's library of reusable Python functions. Sandboxed code calls a
 * skill as `await skills.<name>(**kwargs)`.
 */
export class Skills {
  constructor(
    private readonly client: Client<typeof SkillStoreService>,
    private readonly tenant: string,
  ) {}

  /** Stores a new skill; `source` must define `async def run(...)`. */
  async create(id: string, description: string, source: string, options: CallOptions = {}): Promise<Skill> {
    return call(async () => (await this.client.createSkill({ tenant: this.tenant, skillId: id, skill: { description, source } }, options)).skill!);
  }

  /** The skill, source included. */
  async get(id: string, options: CallOptions = {}): Promise<Skill> {
    return call(async () => (await this.client.getSkill({ tenant: this.tenant, name: skillName(id) }, options)).skill!);
  }

  /** Every skill (without source), following pagination. */
  async list(options: CallOptions = {}): Promise<Skill[]> {
    return call(async () => {
      const all: Skill[] = [];
      let pageToken = "";
      do {
        const page = await this.client.listSkills({ tenant: this.tenant, pageToken }, options);
        all.push(...page.skills);
        pageToken = page.nextPageToken;
      } while (pageToken);
      return all;
    });
  }

  /**
   * One page of skills ranked by relevance to a natural-language query
   * (`results`, best first; `ranker` names the scorer). `pageSize` 0 means 10
   * (at most 100); `pageToken` is "" for the first page, else a previous
   * response's `nextPageToken`, which is "" on the last page.
   */
  async search(query: string, pageSize = 0, pageToken = "", options: CallOptions = {}): Promise<SearchSkillsResponse> {
    return call(() => this.client.searchSkills({ tenant: this.tenant, query, pageSize, pageToken }, options));
  }

  /** Replaces description and source; a non-empty etag must match (ABORTED otherwise). */
  async update(id: string, description: string, source: string, etag = "", options: CallOptions = {}): Promise<Skill> {
    return call(async () => (await this.client.updateSkill({ tenant: this.tenant, skill: { name: skillName(id), description, source, etag } }, options)).skill!);
  }

  async delete(id: string, options: CallOptions = {}): Promise<void> {
    await call(() => this.client.deleteSkill({ tenant: this.tenant, name: skillName(id) }, options));
  }
}
