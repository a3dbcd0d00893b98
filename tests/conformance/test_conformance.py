"""The Python client against conformance/cases.json and a real server.

Uses the server given by conformance/with_server.py (CODEMODE_CONFORMANCE_TARGET and
the rest, see conformance/README.md) when set, so all four languages are judged
against one server; otherwise starts its own, with mTLS, exactly as the harness does.
Every case runs once per principal: as tenant A's token principal and, over mTLS, as
tenant A's certificate principal (no token).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator, Mapping

import pytest

from tests.conftest import require

_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)

from conformance.python.runner import CaseSkipped, Runner, load_cases, principals_in  # noqa: E402
from conformance.with_server import codemode_server  # noqa: E402

_GIVEN = bool(os.environ.get("CODEMODE_CONFORMANCE_TARGET"))
PRINCIPALS = principals_in(os.environ) if _GIVEN else ["token", "mtls"]
PARAMS = [(principal, case) for principal in PRINCIPALS for case in load_cases("py", principal)]

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def server_env() -> Iterator[Mapping[str, str]]:
    if _GIVEN:
        yield os.environ
        return
    with codemode_server(sys.executable, mtls=True) as server:
        yield server.env()


@pytest.fixture(scope="module")
def runners(server_env: Mapping[str, str]) -> Iterator[dict[str, Runner]]:
    built = {principal: Runner(server_env, principal) for principal in PRINCIPALS}
    yield built
    for runner in built.values():
        runner.close()


@pytest.mark.parametrize(("principal", "case"), PARAMS, ids=[f"{p}/{c['name']}" for p, c in PARAMS])
def test_case(runners: dict[str, Runner], principal: str, case: dict) -> None:
    try:
        runners[principal].run_case(case)
    except CaseSkipped as reason:
        # Only a server without the SkillStore skips (UNIMPLEMENTED); ours has it, so CI fails.
        require(False, f"the server feature this case needs ({reason})")
