"""Skill validation reads the AST only; these cover py-code-mode parity and its fixed quirks."""

from __future__ import annotations

import pytest

from server.skills.validation import validate_name, validate_skill
from server.storage.errors import SkillInvalidError

GOOD = '''
"""Fetch JSON from URL.

More text.
"""

async def run(url: str, retries: int = 3, *, verbose: bool = False, tools=None, deps=None,
              opts: dict = None, items: list[int] = (), ratio: float = 0.5):
    return url
'''


def test_parameters_and_description_from_ast():
    skill = validate_skill("fetch_json", GOOD)
    assert skill.description == "Fetch JSON from URL."
    params = {p.name: p for p in skill.parameters}
    assert list(params) == ["url", "retries", "verbose", "opts", "items", "ratio"]
    assert (params["url"].type, params["url"].required, params["url"].default) == ("string", True, "")
    assert (params["retries"].type, params["retries"].default) == ("integer", "3")
    assert params["verbose"].type == "boolean" and not params["verbose"].required
    assert params["opts"].type == "object" and params["opts"].default == "None"
    assert params["items"].type == "string"  # generics map to string, as in py-code-mode
    assert params["ratio"].type == "number"


def test_explicit_description_wins_then_run_docstring():
    assert validate_skill("a", GOOD, "  Mine  ").description == "Mine"
    src = 'async def run():\n    """From run.\n\n    more"""\n'
    assert validate_skill("a", src).description == "From run."


def test_validation_never_executes_code(tmp_path):
    marker = tmp_path / "ran"
    src = f"open({str(marker)!r}, 'w').write('x')\nasync def run():\n    pass\n"
    validate_skill("side_effect", src)
    assert not marker.exists()


@pytest.mark.parametrize(
    "source, message",
    [
        ("def run():\n    pass\n", "must define 'async def run()'"),
        ("x = 1\n", "async def run()"),
        ("class A:\n    async def run(self):\n        pass\ndef run():\n    pass\n",
         "must define 'async def run()'"),
        ("class A:\n    async def run(self):\n        pass\n", "module-level"),
        ("async def run(:\n", "Syntax error in skill code"),
        ("", "empty"),
        ("async def run():\n    pass\n\x00", "NUL"),
        ("async def run():\n    pass\n#" + "x" * 300_000, "limit"),
    ],
)
def test_bad_sources(source, message):
    with pytest.raises(SkillInvalidError) as err:
        validate_skill("ok_name", source)
    assert message in err.value.message


def test_binary_junk_is_rejected():
    junk = bytes(range(256)).decode("latin-1")
    with pytest.raises(SkillInvalidError):
        validate_skill("junk", junk)


@pytest.mark.parametrize(
    "name", ["", "list", "search", "get", "invoke", "create", "delete", "_private", "1abc",
             "has-dash", "a" * 129, "naïve", "a.b", "a b"],
)
def test_bad_names(name):
    with pytest.raises(SkillInvalidError):
        validate_name(name)


def test_good_names():
    assert validate_name("a" * 128) == "a" * 128
    assert validate_name("fetch_json2") == "fetch_json2"
