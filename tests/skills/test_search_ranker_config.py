"""`--search-ranker` reaches SearchSkills: the response names the ranker that answered."""

from __future__ import annotations

import grpc
import pytest

from codemode_protos.v1 import skill_pb2, skill_pb2_grpc
from server.config import ConfigError, parse_config
from server.skills import minilm
from tests.conftest import require

SOURCE = '"""Fetch JSON from a URL."""\nasync def run(url: str):\n    return url\n'


def test_unknown_ranker_is_a_config_error() -> None:
    with pytest.raises(ConfigError):
        parse_config(["--search-ranker", "tfidf"])


def test_ranker_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CODEMODE_SEARCH_RANKER", "bm25")
    assert parse_config([]).search_ranker == "bm25"


@pytest.mark.parametrize("ranker", ["bm25", "embedding"])
async def test_configured_ranker_answers_search(running_server, ranker: str) -> None:  # type: ignore[no-untyped-def]
    if ranker == "embedding":
        require(minilm.available(), "the embedding model package (scripts/setup/00-python.sh installs it)")
    server = await running_server(search_ranker=ranker)
    async with grpc.aio.insecure_channel(server.address) as channel:
        stub = skill_pb2_grpc.SkillStoreServiceStub(channel)
        await stub.CreateSkill(skill_pb2.CreateSkillRequest(skill_id="fetch_json", skill=skill_pb2.Skill(source=SOURCE)))
        response = await stub.SearchSkills(skill_pb2.SearchSkillsRequest(query="download data from an api"))
    assert response.ranker.startswith(ranker)
    assert [r.skill.name for r in response.results] == ["skills/fetch_json"]


async def test_embedding_ranker_without_model_refuses_to_start(running_server, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setattr(minilm, "available", lambda: False)  # simulates an install without the model package
    with pytest.raises(ConfigError, match="embedding model is not installed"):
        await running_server(search_ranker="embedding")
