package codemode

import (
	"context"

	codemodev1 "github.com/codemode-dev/codemode/clients/go/gen/codemode/v1"
)

// Skills is a tenant's library of reusable Python functions. Sandboxed code
// calls a skill as `await skills.<name>(**kwargs)`.
type Skills struct {
	client codemodev1.SkillStoreServiceClient
	tenant string
}

// SkillName turns an id ("greet") into a resource name ("skills/greet").
func SkillName(id string) string { return "skills/" + id }

// Create stores a new skill; source must define `async def run(...)`.
func (s *Skills) Create(ctx context.Context, id, description, source string) (*codemodev1.Skill, error) {
	resp, err := s.client.CreateSkill(ctx, &codemodev1.CreateSkillRequest{
		Tenant:  s.tenant,
		SkillId: id,
		Skill:   &codemodev1.Skill{Description: description, Source: source},
	})
	return resp.GetSkill(), wrapError(err)
}

// Get returns the skill, source included.
func (s *Skills) Get(ctx context.Context, id string) (*codemodev1.Skill, error) {
	resp, err := s.client.GetSkill(ctx, &codemodev1.GetSkillRequest{Tenant: s.tenant, Name: SkillName(id)})
	return resp.GetSkill(), wrapError(err)
}

// List returns every skill (without source), following pagination.
func (s *Skills) List(ctx context.Context) ([]*codemodev1.Skill, error) {
	var all []*codemodev1.Skill
	token := ""
	for {
		resp, err := s.client.ListSkills(ctx, &codemodev1.ListSkillsRequest{Tenant: s.tenant, PageToken: token})
		if err != nil {
			return all, wrapError(err)
		}
		all = append(all, resp.GetSkills()...)
		token = resp.GetNextPageToken()
		if token == "" {
			return all, nil
		}
	}
}

// Search ranks skills by relevance to a natural-language query and returns
// one page of hits (Results, best first; Ranker names the scorer).
// pageSize 0 means 10 (at most 100); pageToken is "" for the first page,
// else a previous response's NextPageToken, which is "" on the last page.
func (s *Skills) Search(ctx context.Context, query string, pageSize int32, pageToken string) (*codemodev1.SearchSkillsResponse, error) {
	resp, err := s.client.SearchSkills(ctx, &codemodev1.SearchSkillsRequest{Tenant: s.tenant, Query: query, PageSize: pageSize, PageToken: pageToken})
	if err != nil {
		return nil, wrapError(err)
	}
	return resp, nil
}

// Update replaces the description and source. A non-empty etag must match
// the stored skill (ABORTED / ETAG_MISMATCH otherwise).
func (s *Skills) Update(ctx context.Context, id, description, source, etag string) (*codemodev1.Skill, error) {
	resp, err := s.client.UpdateSkill(ctx, &codemodev1.UpdateSkillRequest{
		Tenant: s.tenant,
		Skill:  &codemodev1.Skill{Name: SkillName(id), Description: description, Source: source, Etag: etag},
	})
	return resp.GetSkill(), wrapError(err)
}

// Delete removes the skill.
func (s *Skills) Delete(ctx context.Context, id string) error {
	_, err := s.client.DeleteSkill(ctx, &codemodev1.DeleteSkillRequest{Tenant: s.tenant, Name: SkillName(id)})
	return wrapError(err)
}
