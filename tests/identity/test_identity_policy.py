"""The pieces that need no server: the policy table, the principals file format, credentials."""

from __future__ import annotations

import hashlib
import json as json_module

import pytest

from codemode_protos.v1 import (
    artifact_pb2,
    dependency_pb2,
    execute_pb2,
    session_pb2,
    skill_pb2,
)
from server.errors import ServiceError
from server.identity import policy
from server.identity.credentials import (
    Authenticator,
    bearer_token,
    certificate_identity,
)
from server.identity.principals import (
    Principal,
    PrincipalsError,
    PrincipalSet,
    Role,
    TokenEntry,
    parse,
)


def test_the_policy_names_every_rpc_of_the_public_api() -> None:
    rpcs = {
        f"/{service.full_name}/{method.name}"
        for module in (artifact_pb2, dependency_pb2, execute_pb2, session_pb2, skill_pb2)
        for service in module.DESCRIPTOR.services_by_name.values()
        for method in service.methods
    }
    assert rpcs == {m for m in policy.METHODS if m.startswith("/codemode.")}


def test_an_unlisted_method_is_refused_to_everyone_even_operators() -> None:
    operator = Principal("op", Role.OPERATOR)
    with pytest.raises(ServiceError) as refused:
        policy.authorize(operator, "/codemode.v1.NewService/Thing", policy.action_for("/codemode.v1.NewService/Thing"))
    assert refused.value.reason == "PERMISSION_DENIED"


def digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


@pytest.mark.parametrize(
    ("document", "message"),
    [
        ({"principals": [{"id": "a", "role": "admin", "tenant": "t"}]}, "role must be one of"),
        ({"principals": [{"id": "a", "role": "operator", "tenant": "t"}]}, "operator has no tenant"),
        ({"principals": [{"id": "a", "role": "tenant"}]}, "tenant ''"),
        ({"principals": [{"id": "a", "role": "tenant", "tenant": "default\n"}]}, "tenant"),
        ({"principals": [{"id": "a", "role": "tenant", "tenant": "t", "token": "x"}]}, "unknown keys"),
        ({"principals": [{"id": "a", "role": "reader", "tenant": "t", "tokens": [{"sha256": "abc"}]}]}, "64 lowercase hex"),
        ({"principals": [{"id": "a", "role": "reader", "tenant": "t"}, {"id": "a", "role": "reader", "tenant": "u"}]}, "twice"),
        ({"principals": [
            {"id": "a", "role": "reader", "tenant": "t", "tokens": [{"sha256": digest("x")}]},
            {"id": "b", "role": "reader", "tenant": "t", "tokens": [{"sha256": digest("x")}]},
        ]}, "both"),
        ({"principals": [
            {"id": "a", "role": "reader", "tenant": "t", "mtls_identities": ["spiffe://x/y"]},
            {"id": "b", "role": "tenant", "tenant": "u", "mtls_identities": ["spiffe://x/y"]},
        ]}, "both"),
        ({"version": 2, "principals": []}, "version"),
        ({"principal": []}, "unknown top-level"),
        ({"principals": [{"id": "bad id", "role": "reader", "tenant": "t"}]}, "id"),
    ],
)
def test_invalid_files_are_refused_whole(document: object, message: str) -> None:
    with pytest.raises(PrincipalsError, match=message):
        parse(document, "p.json")


def test_two_tokens_per_principal_and_lookup_by_token_only() -> None:
    principals = parse(
        {"principals": [{"id": "svc", "role": "tenant", "tenant": "acme",
                         "tokens": [{"sha256": digest("old")}, {"sha256": digest("new")}]}]}, "p.json"
    )
    auth = Authenticator(principals)
    assert auth.authenticate("old", None).id == auth.authenticate("new", None).id == "svc"
    with pytest.raises(ServiceError) as refused:
        auth.authenticate(digest("old"), None)  # the stored hash is not a credential
    assert refused.value.reason == "UNAUTHENTICATED"


def test_api_token_shorthand_cannot_collide_with_the_file() -> None:
    from server.identity.bootstrap import api_token_principal

    clash = PrincipalSet([Principal("x", Role.READER, "t", (TokenEntry(digest("same")),))])
    with pytest.raises(PrincipalsError, match="both"):
        Authenticator(clash, [api_token_principal("same")])


@pytest.mark.parametrize(
    ("metadata", "expected"),
    [((), None), ((("authorization", "Bearer abc"),), "abc"), ((("authorization", "bearer abc "),), "abc"),
     ((("x", "y"), ("authorization", "Bearer t")), "t")],
)
def test_bearer_token(metadata: tuple, expected: str | None) -> None:
    assert bearer_token(metadata) == expected


@pytest.mark.parametrize("value", ["Basic dXNlcjpw", "Bearer", "Bearer    ", "Bearer " + "x" * 5000])
def test_malformed_authorization_is_unauthenticated(value: str) -> None:
    with pytest.raises(ServiceError) as refused:
        bearer_token((("authorization", value),))
    assert refused.value.reason == "UNAUTHENTICATED"


def test_certificate_identity_prefers_a_single_uri_san() -> None:
    assert certificate_identity({"peer_uri": [b"spiffe://a/b"], "x509_common_name": [b"cn"]}) == "spiffe://a/b"
    assert certificate_identity({"x509_common_name": [b"cn"]}) == "cn"
    assert certificate_identity({"peer_uri": [b"spiffe://a", b"spiffe://b"], "x509_common_name": [b"cn"]}) is None
    assert certificate_identity({"transport_security_type": [b"ssl"]}) is None


@pytest.mark.parametrize(
    "text",
    [
        '{"principals": []}', ' { "version" : 1 , "principals" : [ ] } \n', '{}',
        '{"principals": [{"id": "a", "role": "tenant", "tenant": "t", "tokens": [{"sha256": "%s"}]}], "version": 1}' % ("a" * 64),
        json_module.dumps({"version": 1, "principals": [{"id": f"p{i}", "role": "reader", "tenant": "t"} for i in range(5)]}, indent=2),
        json_module.dumps({"principals": [{"id": "x\\u00e9", "role": "reader", "tenant": "t", "description": "a,]}"}]}, separators=(",", ":")),
    ],
)
def test_piecewise_json_decoding_equals_json_loads(text: str) -> None:
    from server.identity.principals import decode

    assert decode(text, "p.json") == json_module.loads(text)


@pytest.mark.parametrize("text", ['{"principals": [1,]}', '{"principals": [1 2]}', '{"principals": [}', '{"a": 1} x', "", '{"principals": ['])
def test_piecewise_json_decoding_rejects_what_json_loads_rejects(text: str) -> None:
    from server.identity.principals import decode

    with pytest.raises(ValueError):
        json_module.loads(text)
    with pytest.raises(PrincipalsError, match="not valid JSON"):
        decode(text, "p.json")


def test_reloads_reuse_unchanged_principals_and_see_changed_ones(tmp_path) -> None:
    from server.identity.principals import PrincipalsFile

    path = tmp_path / "p.json"
    entries = [{"id": f"p{i}", "role": "tenant", "tenant": "t", "tokens": [{"sha256": digest(f"t{i}")}]} for i in range(3)]
    path.write_text(json_module.dumps({"principals": entries}))
    file = PrincipalsFile(str(path))
    first = file.load()
    entries[1]["tenant"] = "u"
    path.write_text(json_module.dumps({"principals": entries}))
    second = file.load()
    assert second.get("p0") is first.get("p0")  # unchanged text: the same validated object
    assert second.get("p1").tenant == "u" and second.by_token("t1").tenant == "u"
    entries[2]["role"] = "root"
    path.write_text(json_module.dumps({"principals": entries}))
    with pytest.raises(PrincipalsError, match="role"):
        file.load()


def test_a_known_principal_listed_twice_is_still_a_duplicate(tmp_path) -> None:
    from server.identity.principals import PrincipalsFile

    path = tmp_path / "p.json"
    entry = {"id": "p", "role": "tenant", "tenant": "t", "tokens": [{"sha256": digest("t")}]}
    path.write_text(json_module.dumps({"principals": [entry]}))
    file = PrincipalsFile(str(path))
    file.load()
    path.write_text(json_module.dumps({"principals": [entry, entry]}))
    with pytest.raises(PrincipalsError, match="appears twice"):
        file.load()


def test_overlapping_reload_work_restores_the_collector_and_switch_interval() -> None:
    import gc
    import sys
    import threading

    from server.identity.watcher import _Politeness

    polite, before = _Politeness(), (gc.isenabled(), sys.getswitchinterval())
    inside, release = threading.Event(), threading.Event()
    first = threading.Thread(target=polite.run, args=(lambda: (inside.set(), release.wait(5)),))
    first.start()
    inside.wait(5)
    assert not gc.isenabled() and sys.getswitchinterval() < before[1]
    polite.run(lambda: None)  # overlaps the first and ends before it
    assert not gc.isenabled(), "the second run must not end the first one's pause"
    release.set()
    first.join(5)
    assert (gc.isenabled(), sys.getswitchinterval()) == before
