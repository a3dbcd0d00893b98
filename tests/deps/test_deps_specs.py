"""Spec validation and normalization (py-code-mode's rules), and --deps at config time."""

from __future__ import annotations

import grpc
import pytest

from server.config import ConfigError, parse_config
from server.deps.errors import DepsSpecError
from server.deps.specs import normalize_set, normalize_spec, package_set_key


@pytest.mark.parametrize(
    "spec",
    [
        "", "   ", "git+https://example.invalid/x@main", "https://example.invalid/x.whl",
        "pkg; python_version < '3'", "-e .", "--index-url=x", "pkg && rm -rf /", "pkg|cat",
        "../local/path", "pkg$(id)", "pkg`id`", "name @ file:///tmp/x", "a" * 300, "pkg\nother", 42, None,
    ],
)
def test_unsafe_specs_are_rejected_as_invalid_package_spec(spec):
    with pytest.raises(DepsSpecError) as caught:
        normalize_spec(spec)
    assert isinstance(caught.value, ValueError)
    assert caught.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert caught.value.reason == "INVALID_PACKAGE_SPEC"


def test_names_are_normalized_and_sets_are_canonical():
    assert normalize_spec("Foo_Bar.baz[Extra]>=1.0, <2") == "foo-bar-baz[extra]>=1.0,<2"
    assert normalize_spec(" requests ") == "requests"
    # One entry per project, the last one wins, sorted: equal sets share a cache key.
    assert normalize_set(["Zeta", "alpha>=1", "ALPHA>=2"]) == ("alpha>=2", "zeta")
    assert package_set_key(normalize_set(["b", "a"])) == package_set_key(normalize_set(["A", "B"]))


def test_server_deps_flag_is_validated_and_normalized():
    assert parse_config(["--deps", "CM_Tiny_A, cm-tiny-b>=1"], environ={}).deps == ("cm-tiny-a", "cm-tiny-b>=1")
    with pytest.raises(ConfigError, match="--deps"):
        parse_config(["--deps", "git+https://example.invalid/x"], environ={})
    config = parse_config(
        ["--deps-wheelhouse", "/srv/wheels", "--deps-install-timeout", "90s"],
        environ={"CODEMODE_DEPS_INDEX_URL": "http://127.0.0.1:9/simple"},
    )
    assert config.deps_wheelhouse == "/srv/wheels"
    assert config.deps_index_url == "http://127.0.0.1:9/simple"
    assert config.deps_install_timeout == 90.0
