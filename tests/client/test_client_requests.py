"""Request building and channel settings: the decisions the client makes itself."""

from __future__ import annotations

import pytest

from codemode import _requests as req
from codemode._channel import ChannelSettings, TLSConfig, is_local_target
from codemode.results import DownloadedArtifact
from codemode.v1 import artifact_pb2, session_pb2


def test_execute_deadline_is_timeout_plus_margin_unless_given():
    assert req.execute_deadline(10, None, None) == 10 + req.EXECUTE_DEADLINE_MARGIN_SECONDS
    assert req.execute_deadline(10, 3, None) == 3
    assert req.execute_deadline(None, None, 30) == 30 + req.EXECUTE_DEADLINE_MARGIN_SECONDS
    assert req.execute_deadline(None, None, None) is None


def test_execute_request_carries_timeout():
    request = req.execute_request("sessions/a", "1", 2.5, None)
    assert request.timeout.ToTimedelta().total_seconds() == 2.5
    assert not req.execute_request("sessions/a", "1", None, None).HasField("timeout")


def test_names_accept_ids_and_resource_names():
    assert req.qualify("sessions", "abc") == "sessions/abc"
    assert req.qualify("sessions", "sessions/abc") == "sessions/abc"
    assert req.qualify("sessions", "") == ""


def test_session_config_from_json_dict():
    request = req.create_session_request({"timeout": "7s", "memoryLimitBytes": "1000"}, "my-id", None, {"k": "v"}, None)
    assert request.session.config.timeout.seconds == 7
    assert request.session.config.memory_limit_bytes == 1000
    assert request.session_id == "my-id" and request.session.labels == {"k": "v"}
    assert req.session_default_timeout(session_pb2.Session(config=request.session.config)) == 7


@pytest.mark.parametrize(
    "value, kind",
    [(b"\x00\x01", artifact_pb2.ARTIFACT_TYPE_BYTES), ("text ☃", artifact_pb2.ARTIFACT_TYPE_TEXT), ({"a": 1}, artifact_pb2.ARTIFACT_TYPE_JSON), (3, artifact_pb2.ARTIFACT_TYPE_JSON)],
)
def test_artifact_round_trip_through_chunks(value, kind):
    requests = list(req.upload_requests("t", "x", value, None, "d", {"m": 1}))
    header = requests[0].artifact
    assert header.name == "artifacts/x" and header.type == kind and requests[0].tenant == "t"
    data = b"".join(r.chunk for r in requests[1:])
    assert DownloadedArtifact(header, data).value == value


def test_large_artifact_is_chunked_at_one_mib():
    requests = list(req.upload_requests("", "big", b"x" * (req.ARTIFACT_CHUNK_BYTES * 2 + 1), None, "", None))
    assert [len(r.chunk) for r in requests[1:]] == [req.ARTIFACT_CHUNK_BYTES, req.ARTIFACT_CHUNK_BYTES, 1]


def test_update_mask_lists_only_given_fields():
    request = req.update_skill_request("", "s", None, "new", "")
    assert list(request.update_mask.paths) == ["description"]
    with pytest.raises(ValueError):
        req.update_skill_request("", "s", None, None, "")


@pytest.mark.parametrize(
    "target, local",
    [("127.0.0.1:1", True), ("localhost:1", True), ("[::1]:1", True), ("unix:/tmp/s", True), ("example.com:443", False), ("10.0.0.1:1", False)],
)
def test_local_targets(target, local):
    assert is_local_target(target) is local


def test_token_is_never_sent_in_plaintext_to_remote_hosts():
    with pytest.raises(ValueError, match="plaintext"):
        ChannelSettings("example.com:443", token="t")
    ChannelSettings("example.com:443", token="t", tls=True)
    ChannelSettings("example.com:443", token="t", allow_insecure_token=True)
    ChannelSettings("127.0.0.1:1", token="t")


def test_tls_config_needs_cert_and_key_together():
    with pytest.raises(ValueError):
        TLSConfig(client_certificate=b"x").credentials()


def test_server_name_override_becomes_a_channel_option():
    opts = dict(ChannelSettings("127.0.0.1:1", tls=TLSConfig(server_name_override="x")).channel_options())
    assert opts["grpc.ssl_target_name_override"] == "x"
    assert opts["grpc.max_receive_message_length"] >= 4 * 1024 * 1024
