"""A write workload through the real API, and the check that a restore is one instant of it.

Every write goes through the Python client to a running server, one at a time, and is
logged before it is sent. Because writes are sequential, any point-in-time snapshot
of the store equals the state after some prefix of the log; `matching_prefixes`
finds which ones. A copy that is not one instant (say artifacts copied before a
later skill write, but skills after it) matches no prefix.
"""

from __future__ import annotations

import dataclasses
import hashlib
import random
import threading
import time
from typing import Any

from codemode import Client

TENANTS = ("acme", "beta")
#: Enough skills that search has a library to rank, few enough to keep the writes quick.
MAX_SKILLS_PER_TENANT = 60
_NOUNS = (
    "invoice shipment ledger forecast weather sensor payroll inventory customer orchid glacier "
    "telescope recipe playlist satellite harbor vineyard bicycle volcano library museum tractor "
    "violin compass lantern meadow rocket sandstorm tunnel voucher warehouse"
).split()
_VERBS = "converts summarizes validates reconciles ranks merges downloads archives translates audits".split()

Key = tuple[str, str, str]  # ("skill" | "artifact", tenant, name)


@dataclasses.dataclass(frozen=True)
class Op:
    kind: str  # put_skill, delete_skill, put_artifact, delete_artifact
    tenant: str
    name: str
    value: Any = None  # (source, description) for skills, sha256 for artifacts


def apply(state: dict[Key, Any], op: Op) -> None:
    key: Key = ("skill" if op.kind.endswith("skill") else "artifact", op.tenant, op.name)
    if op.kind.startswith("put"):
        state[key] = op.value
    else:
        state.pop(key, None)


def matching_prefixes(ops: list[Op], restored: dict[Key, Any]) -> list[int]:
    """Every k for which the state after ops[:k] is exactly `restored`."""
    state: dict[Key, Any] = {}
    found = [0] if state == restored else []
    for k, op in enumerate(ops, start=1):
        apply(state, op)
        if state == restored:
            found.append(k)
    return found


def state_of(ops: list[Op]) -> dict[Key, Any]:
    state: dict[Key, Any] = {}
    for op in ops:
        apply(state, op)
    return state


def description(rng: random.Random) -> str:
    a, b, c = rng.sample(_NOUNS, 3)
    return f"{rng.choice(_VERBS).capitalize()} {a} records into {b} reports for the {c} team"


def source(name: str, rng: random.Random) -> str:
    return f'async def run(x: int = 1) -> str:\n    return "{name}-{rng.getrandbits(64):x}" * x\n'


class Workload:
    """Writes skills and artifacts into every tenant, each write logged in `ops`."""

    def __init__(self, target: str, seed: int) -> None:
        self.target = target
        self.rng = random.Random(seed)
        self.ops: list[Op] = []
        #: How many logged ops the server has acknowledged.
        self.acked = 0
        self._lock = threading.Lock()
        self._counter = 0
        self._clients = {t: Client(target, token="", tenant=t, default_deadline=60) for t in TENANTS}

    def close(self) -> None:
        for client in self._clients.values():
            client.close()

    def _log(self, op: Op) -> None:
        with self._lock:
            self.ops.append(op)

    def _ack(self) -> None:
        with self._lock:
            self.acked = len(self.ops)

    def _live(self, kind: str, tenant: str) -> list[str]:
        return sorted(k[2] for k in state_of(self.ops) if k[0] == kind and k[1] == tenant)

    def put_skill(self, tenant: str, name: str | None = None) -> None:
        client = self._clients[tenant]
        exists = name is not None
        if name is None:
            self._counter += 1
            name = f"w{self._counter}"
        text, desc = source(name, self.rng), description(self.rng)
        self._log(Op("put_skill", tenant, name, (text, desc)))
        if exists:
            client.skills.update(name, source=text, description=desc)
        else:
            client.skills.create(name, text, description=desc)
        self._ack()

    def put_artifact(self, tenant: str, name: str | None = None, size: int | None = None) -> None:
        client = self._clients[tenant]
        if name is None:
            self._counter += 1
            name = f"data/a{self._counter}.bin"
        if size is None:
            size = self.rng.choice((0, 1, 1000, 70_000, 300_000, 1_500_000))
        kind = self.rng.choice(("bytes", "text", "json"))
        if kind == "bytes":
            data: Any = self.rng.randbytes(size)
            raw = data
        elif kind == "text":
            data = "".join(self.rng.choice("abcdefgh é€\n") for _ in range(max(size // 4, 1)))
            raw = data.encode()
        else:
            data = {"rows": [self.rng.random() for _ in range(max(size // 25, 1))]}
            raw = None  # the server serializes it; its sha256 is read back from the reply
        self._log(Op("put_artifact", tenant, name, None))
        stored = client.artifacts.put(f"artifacts/{name}", data)  # a "/" in it: give the full name
        if raw is not None:
            assert stored.sha256 == hashlib.sha256(raw).hexdigest()
        with self._lock:  # the logged value is what the server says it stored
            self.ops[-1] = Op("put_artifact", tenant, name, stored.sha256)
        self._ack()

    def delete(self, kind: str, tenant: str, name: str) -> None:
        client = self._clients[tenant]
        self._log(Op(f"delete_{kind}", tenant, name))
        if kind == "skill":
            client.skills.delete(name)
        else:
            client.artifacts.delete(f"artifacts/{name}")
        self._ack()

    def step(self) -> None:
        """One random write: mostly creates, some replacements and deletes."""
        tenant = self.rng.choice(TENANTS)
        skills, artifacts = self._live("skill", tenant), self._live("artifact", tenant)
        roll = self.rng.random()
        if roll < 0.35:
            if len(skills) >= MAX_SKILLS_PER_TENANT:
                self.delete("skill", tenant, self.rng.choice(skills))
            else:
                self.put_skill(tenant)
        elif roll < 0.65:
            self.put_artifact(tenant)
        elif roll < 0.78 and skills:
            self.put_skill(tenant, self.rng.choice(skills))
        elif roll < 0.88 and artifacts:
            self.put_artifact(tenant, self.rng.choice(artifacts))
        elif roll < 0.94 and skills:
            self.delete("skill", tenant, self.rng.choice(skills))
        elif artifacts:
            self.delete("artifact", tenant, self.rng.choice(artifacts))


class Writer(threading.Thread):
    """Runs `Workload.step` in a loop until stopped: the writes a backup races with."""

    def __init__(self, workload: Workload) -> None:
        super().__init__(daemon=True)
        self.workload = workload
        self.stop_event = threading.Event()
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            while not self.stop_event.is_set():
                self.workload.step()
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            self.error = exc

    def wait_for_acked(self, count: int, timeout: float = 120.0) -> None:
        deadline = time.monotonic() + timeout
        while self.workload.acked < count:
            assert self.error is None, f"the writer failed: {self.error!r}"
            assert time.monotonic() < deadline, f"only {self.workload.acked} writes in {timeout}s"
            time.sleep(0.02)

    def finish(self) -> None:
        self.stop_event.set()
        self.join(timeout=120)
        assert not self.is_alive(), "the writer did not stop"
        assert self.error is None, f"the writer failed: {self.error!r}"


def read_state(target: str) -> dict[Key, Any]:
    """Everything a server serves, read back through the API: skill source + description,
    and each artifact's SHA-256 computed from its downloaded bytes (and checked against
    the SHA-256 the server reports)."""
    state: dict[Key, Any] = {}
    for tenant in TENANTS:
        with Client(target, token="", tenant=tenant, default_deadline=60) as client:
            for listed in client.skills.list():
                name = listed.name.removeprefix("skills/")
                skill = client.skills.get(name)
                state[("skill", tenant, name)] = (skill.source, skill.description)
            for listed in client.artifacts.list():
                name = listed.name.removeprefix("artifacts/")
                downloaded = client.artifacts.get(listed.name)
                digest = hashlib.sha256(downloaded.data).hexdigest()
                assert digest == downloaded.artifact.sha256 == listed.sha256, name
                assert len(downloaded.data) == listed.size_bytes, name
                state[("artifact", tenant, name)] = digest
    return state


def search(client: Client, tenant: str, query: str) -> tuple[list[str], str]:
    """Every hit for `query` (all pages), best first, and the ranker that answered.

    Through the raw stub: the ranker name is only on the reply, and the request's size
    field is `page_size` (paged) in the current proto, `limit` before it.
    """
    from codemode.v1 import skill_pb2

    fields = skill_pb2.SearchSkillsRequest.DESCRIPTOR.fields_by_name
    size = {"page_size": 100} if "page_size" in fields else {"limit": 100}
    names: list[str] = []
    token = ""
    while True:
        paging = {"page_token": token} if "page_token" in fields else {}
        request = skill_pb2.SearchSkillsRequest(tenant=tenant, query=query, **size, **paging)
        reply = client._unary(client.skills._stub.SearchSkills, request)
        names += [r.skill.name.removeprefix("skills/") for r in reply.results]
        token = getattr(reply, "next_page_token", "")
        if not token:
            return names, reply.ranker


def assert_search_agrees(target: str, state: dict[Key, Any]) -> str:
    """SearchSkills finds every skill present and nothing else; each skill's own
    description finds it first. Returns the ranker that answered."""
    ranker = ""
    for tenant in TENANTS:
        expected = {k[2]: v for k, v in state.items() if k[0] == "skill" and k[1] == tenant}
        with Client(target, token="", tenant=tenant, default_deadline=60) as client:
            for name, (_, desc) in sorted(expected.items()):
                found, ranker = search(client, tenant, desc)
                assert set(found) == set(expected), f"{tenant}: search sees {sorted(set(found) ^ set(expected))} wrongly"
                assert found[0] == name, f"{tenant}: searching {desc!r} ranks {found[:3]} first, not {name}"
    return ranker
