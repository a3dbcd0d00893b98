"""Every reason the code base raises is an ErrorReason, and every ErrorReason is raised.

A static scan of server/ and sandbox_agent/ (the source, not a running server): reasons
are named by the generated constants (`error_reason_pb2.ERROR_REASON_X`), never by free
strings, so the scan can list every reason produced. Each must be an ErrorReason value,
and every value of the enum but UNSPECIFIED and the deprecated ones must be produced
somewhere or be listed in server.errors.RESERVED_REASONS with why. ErrorInfo metadata
keys written as literals at raise sites must be lowerCamelCase (AIP-193); the error
builders check the rest when an error is made.
"""

from __future__ import annotations

import ast
import pathlib
import re

import pytest

from codemode_protos.v1 import error_reason_pb2
from server import errors

ROOT = pathlib.Path(__file__).resolve().parents[2]
SOURCES = sorted([*ROOT.glob("server/**/*.py"), *ROOT.glob("sandbox_agent/**/*.py")])
ENUM = {name.removeprefix("ERROR_REASON_") for name in error_reason_pb2.ErrorReason.keys()}
CAMEL = re.compile(r"[a-z][a-zA-Z0-9]*")
# Calls that take a reason, and the position of their reason and metadata arguments.
REASON_CALLS = {"ServiceError": (1, 3), "status_with_reason": (1, 3), "build_status": (1, 3), "abort": (2, 4)}


def _trees() -> list[tuple[pathlib.Path, ast.AST]]:
    return [(path, ast.parse(path.read_text(encoding="utf-8"), str(path))) for path in SOURCES]


def _name_of(func: ast.expr) -> str:
    if isinstance(func, ast.Name):
        return func.id
    if isinstance(func, ast.Attribute):
        return func.attr
    return ""


def produced_reasons() -> dict[str, list[str]]:
    """Reason name -> where it is named (file:line), from every ERROR_REASON_* constant."""
    found: dict[str, list[str]] = {}
    for path, tree in _trees():
        for node in ast.walk(tree):
            name = node.attr if isinstance(node, ast.Attribute) else node.id if isinstance(node, ast.Name) else ""
            if name.startswith("ERROR_REASON_"):
                found.setdefault(name.removeprefix("ERROR_REASON_"), []).append(
                    f"{path.relative_to(ROOT)}:{node.lineno}"  # type: ignore[attr-defined]
                )
    return found


def test_the_scan_sees_the_code_base():
    assert len(SOURCES) > 50
    produced = produced_reasons()
    assert {"SESSION_NOT_FOUND", "INTERNAL", "SERVER_OVERLOADED", "STORAGE_UNAVAILABLE"} <= produced.keys()


def test_every_reason_named_in_the_code_is_an_error_reason():
    unknown = {name: where for name, where in produced_reasons().items() if name not in ENUM}
    assert not unknown, f"not values of codemode.v1.ErrorReason: {unknown}"


def test_no_reason_is_a_free_string():
    """A reason spelled as a string literal is invisible to the scan above (and to a
    rename in the proto): reason arguments, `reason=` keywords, class-level `reason`
    attributes and module constants holding a reason name must be enum constants."""
    offenders = []
    for path, tree in _trees():
        where = path.relative_to(ROOT)
        if where == pathlib.Path("server/errors.py"):
            continue  # the RETRY_SECONDS / RESERVED_REASONS tables are keyed by name
        for node in ast.walk(tree):
            literals: list[ast.expr] = []
            if isinstance(node, ast.Call):
                position = REASON_CALLS.get(_name_of(node.func), (None, None))[0]
                if position is not None and len(node.args) > position:
                    literals.append(node.args[position])
                literals += [kw.value for kw in node.keywords if kw.arg == "reason"]
            elif isinstance(node, (ast.Assign, ast.AnnAssign)) and node.value is not None:
                literals.append(node.value)
            for literal in literals:
                if isinstance(literal, ast.Constant) and isinstance(literal.value, str) and literal.value in ENUM:
                    offenders.append(f"{where}:{literal.lineno}: {literal.value!r}")
    assert not offenders, "use error_reason_pb2.ERROR_REASON_* constants:\n" + "\n".join(offenders)


def test_every_error_reason_is_produced_or_documented_as_reserved():
    produced = produced_reasons()
    expected = ENUM - {"UNSPECIFIED"} - errors.DEPRECATED_REASONS
    missing = sorted(expected - produced.keys() - errors.RESERVED_REASONS.keys())
    assert not missing, f"never raised and not in server.errors.RESERVED_REASONS: {missing}"
    # The reserved list stays honest: a reason raised somewhere is no longer reserved.
    assert not (errors.RESERVED_REASONS.keys() & produced.keys()), errors.RESERVED_REASONS.keys() & produced.keys()
    assert set(errors.RESERVED_REASONS) <= ENUM


def test_deprecated_reasons_are_never_raised():
    produced = produced_reasons()
    raised = {name: produced[name] for name in errors.DEPRECATED_REASONS if name in produced}
    assert not raised, f"deprecated reasons raised: {raised}"
    assert all(
        error_reason_pb2.ErrorReason.DESCRIPTOR.values_by_name[f"ERROR_REASON_{name}"].GetOptions().deprecated
        for name in errors.DEPRECATED_REASONS
    )


def test_metadata_literals_at_raise_sites_are_lower_camel_case():
    offenders = []
    for path, tree in _trees():
        for node in ast.walk(tree):
            if not isinstance(node, ast.Call):
                continue
            name = _name_of(node.func)
            dicts: list[ast.expr] = []
            position = REASON_CALLS.get(name, (None, None))[1]
            if position is not None and len(node.args) > position:
                dicts.append(node.args[position])
            dicts += [kw.value for kw in node.keywords if kw.arg == "metadata"]
            keys = [k.value for d in dicts if isinstance(d, ast.Dict) for k in d.keys if isinstance(k, ast.Constant)]
            if name in ("invalid_argument", "beyond_maximum"):
                keys += [kw.arg for kw in node.keywords if kw.arg not in (None, "field", "reason", "unit", "what")]
            if name == "update" and isinstance(node.func, ast.Attribute) and _name_of(node.func.value) == "metadata":
                keys += [kw.arg for kw in node.keywords if kw.arg]
            offenders += [f"{path.relative_to(ROOT)}:{node.lineno}: {key!r}" for key in keys if not CAMEL.fullmatch(str(key))]
    assert not offenders, "ErrorInfo metadata keys must be lowerCamelCase:\n" + "\n".join(offenders)


@pytest.mark.parametrize("reason", ["SESSION_BUSY", 4, error_reason_pb2.ERROR_REASON_SESSION_BUSY, "ERROR_REASON_SESSION_BUSY"])
def test_the_builders_accept_enum_reasons(reason):
    assert errors.reason_name(reason) == "SESSION_BUSY"
    from sandbox_agent.errors import reason_name as agent_reason_name

    assert agent_reason_name(reason) == "SESSION_BUSY"


@pytest.mark.parametrize("reason", ["BUSY", "session_busy", "UNSPECIFIED", 999])
def test_the_builders_refuse_anything_else(reason):
    with pytest.raises(ValueError):
        errors.reason_name(reason)
    from sandbox_agent.errors import reason_name as agent_reason_name

    with pytest.raises(ValueError):
        agent_reason_name(reason)


@pytest.mark.parametrize("key", ["limit_bytes", "LimitBytes", "limit-bytes", ""])
def test_snake_case_metadata_is_refused_when_the_error_is_made(key):
    import grpc

    with pytest.raises(ValueError):
        errors.ServiceError(grpc.StatusCode.INTERNAL, "INTERNAL", "x", {key: 1})
    from sandbox_agent.errors import status_with_reason

    with pytest.raises(ValueError):
        status_with_reason(grpc.StatusCode.INTERNAL, "INTERNAL", "x", {key: "1"})
