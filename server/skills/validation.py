"""Static validation of skill source.

Skill code is untrusted and must never execute in the server process
(py-code-mode S3 exec'd it on the host), so everything here reads the AST only.
"""

from __future__ import annotations

import ast
import dataclasses
import re

from server.storage.errors import SkillInvalidError

MAX_NAME_LENGTH = 128
DEFAULT_MAX_SOURCE_BYTES = 256 * 1024
MAX_DESCRIPTION_LENGTH = 4096

# Names of SkillsNamespace methods: a skill with one of them would be unreachable
# as `skills.<name>`.
RESERVED_NAMES = frozenset({"list", "search", "get", "invoke", "create", "delete"})

# Parameters the sandbox injects itself; they are not part of a skill's interface.
INJECTED_PARAMETERS = frozenset({"tools", "skills", "artifacts", "deps"})

_ANNOTATION_TYPES = {
    "str": "string",
    "int": "integer",
    "float": "number",
    "bool": "boolean",
    "list": "array",
    "dict": "object",
}

# ASCII only: names become file names and Redis keys, and non-ASCII identifiers
# that normalise to the same NFKC form would be confusable.
_NAME_RE = re.compile(r"[A-Za-z][A-Za-z0-9_]*")  # fullmatch: `$` allows a trailing newline


@dataclasses.dataclass(frozen=True)
class Parameter:
    name: str
    type: str
    default: str
    required: bool

    def to_json(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, data: dict) -> "Parameter":
        return cls(
            name=str(data["name"]),
            type=str(data.get("type", "string")),
            default=str(data.get("default", "")),
            required=bool(data.get("required", False)),
        )


@dataclasses.dataclass(frozen=True)
class ValidatedSkill:
    name: str
    description: str
    source: str
    parameters: tuple[Parameter, ...]


def validate_name(name: str) -> str:
    """Returns the name or raises SkillInvalidError saying what is wrong with it."""
    if not isinstance(name, str) or not name:
        raise SkillInvalidError("skill name is empty", field="name")
    if len(name) > MAX_NAME_LENGTH:
        raise SkillInvalidError(
            f"skill name is {len(name)} characters long; the limit is {MAX_NAME_LENGTH}",
            field="name",
        )
    if name.startswith("_"):
        raise SkillInvalidError(
            f"skill name {name!r} starts with '_'; such names are reserved", field="name"
        )
    if not _NAME_RE.fullmatch(name):
        raise SkillInvalidError(
            f"skill name {name!r} is not an ASCII Python identifier (letters, digits, '_')",
            field="name",
        )
    if name in RESERVED_NAMES:
        raise SkillInvalidError(
            f"skill name {name!r} is reserved (reserved: {', '.join(sorted(RESERVED_NAMES))})",
            field="name",
        )
    return name


def validate_skill(
    name: str,
    source: str,
    description: str = "",
    *,
    max_source_bytes: int = DEFAULT_MAX_SOURCE_BYTES,
) -> ValidatedSkill:
    """Checks a skill and extracts its interface, without running any of its code."""
    validate_name(name)
    tree = _parse(source, max_source_bytes)
    run = _module_level_run(tree)
    if len(description) > MAX_DESCRIPTION_LENGTH:
        raise SkillInvalidError(
            f"description is {len(description)} characters long; the limit is "
            f"{MAX_DESCRIPTION_LENGTH}",
            field="description",
        )
    return ValidatedSkill(
        name=name,
        description=description.strip() or _docstring_line(tree) or _docstring_line(run),
        source=source,
        parameters=tuple(_parameters(run)),
    )


def _parse(source: str, max_source_bytes: int) -> ast.Module:
    if not isinstance(source, str) or not source.strip():
        raise SkillInvalidError("skill source is empty", field="source")
    try:
        encoded = source.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise SkillInvalidError(f"skill source is not valid UTF-8: {exc}", field="source") from exc
    if len(encoded) > max_source_bytes:
        raise SkillInvalidError(
            f"skill source is {len(encoded)} bytes; the limit is {max_source_bytes}",
            field="source",
        )
    if "\x00" in source:
        raise SkillInvalidError("skill source contains NUL bytes", field="source")
    try:
        return ast.parse(source, filename="<skill>")
    except SyntaxError as exc:
        raise SkillInvalidError(
            f"Syntax error in skill code: {exc.msg} (line {exc.lineno})", field="source"
        ) from exc
    except (ValueError, RecursionError, MemoryError) as exc:
        raise SkillInvalidError(f"skill source cannot be parsed: {exc}", field="source") from exc


def _module_level_run(tree: ast.Module) -> ast.AsyncFunctionDef:
    """Finds the top-level `run`; the last definition wins, as at import time.

    Only module-level statements count: py-code-mode accepted an `async def run`
    nested in a class even when the real module-level `run` was sync.
    """
    run: ast.AST | None = None
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name == "run":
            run = node
    if isinstance(run, ast.FunctionDef):
        raise SkillInvalidError(
            "Skill must define 'async def run()', not 'def run()'", field="source"
        )
    if run is None:
        raise SkillInvalidError(
            "Skill must define a module-level 'async def run()' function", field="source"
        )
    assert isinstance(run, ast.AsyncFunctionDef)
    return run


def _docstring_line(node: ast.AST) -> str:
    doc = ast.get_docstring(node)  # type: ignore[arg-type]
    if not doc:
        return ""
    return doc.strip().splitlines()[0].strip()


def _parameters(run: ast.AsyncFunctionDef) -> list[Parameter]:
    args = run.args
    positional = [*args.posonlyargs, *args.args]
    # Defaults align with the tail of the positional parameters.
    defaults: list[ast.expr | None] = [None] * (len(positional) - len(args.defaults))
    defaults.extend(args.defaults)
    # Equal lengths by construction (defaults padded above; ast keeps kw_defaults per kwonlyarg).
    pairs = list(zip(positional, defaults, strict=True)) + list(zip(args.kwonlyargs, args.kw_defaults, strict=True))
    params = []
    for arg, default in pairs:
        if arg.arg in INJECTED_PARAMETERS:
            continue
        params.append(
            Parameter(
                name=arg.arg,
                type=_json_type(arg.annotation),
                default=ast.unparse(default) if default is not None else "",
                required=default is None,
            )
        )
    return params


def _json_type(annotation: ast.expr | None) -> str:
    if isinstance(annotation, ast.Name):
        return _ANNOTATION_TYPES.get(annotation.id, "string")
    if isinstance(annotation, ast.Constant) and isinstance(annotation.value, str):
        return _ANNOTATION_TYPES.get(annotation.value.strip(), "string")
    return "string"
