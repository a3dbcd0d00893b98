"""Exercises the one-host deployment (deploy/compose) through nginx on loopback.

Run by scripts/checks/60-compose.sh once the stack is up; every call goes to the
nginx port published on 127.0.0.1 (never to a container address). It checks
what a user of the deployment relies on:

1. health answers through nginx without a token (readiness SERVING), and auth
   is on: any other call without a token is refused (UNAUTHENTICATED);
2. a session on server-1 (chosen with the :authority nginx routes on) runs
   `1+1` in a Docker sandbox on the host's engine, and sandboxed code saves a
   skill there;
3. the session registry is shared: server-2 (another process, with sandbox
   containers of its own) serves server-1's session, forwarding to server-1,
   whose interpreter keeps its state across the two; server-2 reads the skill
   from the shared Redis, through the API and from a sandbox;
4. without pinning, nginx spreads calls over both instances (round robin) and
   a session is used from new connections whichever instance answers;
5. Redis appends to its AOF on the volume: after `docker compose restart redis`
   the skill is still there;
6. with server-1 stopped, nginx sends every call to server-2 (calls with 8
   made-up tokens are all answered, UNAUTHENTICATED, none UNAVAILABLE), and a
   session server-2 runs is still served through nginx.

Fails with a message naming the step; prints one line per passed step.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
import uuid

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

import codemode
from codemode.errors import CodemodeError, NotFoundError, UnauthenticatedError

SKILL_SOURCE = '"""Double x (compose check)."""\n\nasync def run(x: int):\n    return 2 * x\n'


class CheckFailed(Exception):
    pass


def ok(message: str) -> None:
    print(f"compose-check: ok: {message}", flush=True)


def expect(condition: bool, message: str) -> None:
    if not condition:
        raise CheckFailed(message)


def client(target: str, token: str, instance: str | None = None) -> codemode.Client:
    """A client through nginx; `instance` pins server-1/server-2 via :authority."""
    options = [("grpc.default_authority", instance)] if instance else []
    return codemode.Client(target, token=token, options=options, default_deadline=30)


def run_value(session: codemode.Session, code: str) -> str:
    result = session.run(code, timeout=60)
    expect(result.error is None, f"{code!r} failed in session {session.id}: {result.error} {result.stderr}")
    return result.value_repr or ""


def sandbox_containers(instance_label: str) -> list[str]:
    out = subprocess.run(
        ["docker", "ps", "-q", "--filter", f"label=dev.codemode.server-instance={instance_label}"],
        check=True, capture_output=True, text=True,
    ).stdout
    return out.split()


def check_health(target: str) -> None:
    """What an external monitor sees through nginx: no token, the readiness service."""
    with grpc.insecure_channel(target) as channel:
        response = health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service="readiness"), timeout=10
        )
    expect(response.status == health_pb2.HealthCheckResponse.SERVING,
           f"readiness through nginx is {health_pb2.HealthCheckResponse.ServingStatus.Name(response.status)}")
    ok("readiness through nginx, without a token: SERVING")


def check_auth(target: str) -> None:
    with client(target, "") as anonymous:
        try:
            anonymous.get_session("000000000000")
        except UnauthenticatedError:
            ok("a call without a token is refused with UNAUTHENTICATED")
            return
        except CodemodeError as exc:
            raise CheckFailed(f"a call without a token failed with {exc!r}, expected UNAUTHENTICATED") from None
    raise CheckFailed("a call without a token succeeded: auth is off")


def check_instances(target: str, token: str, skill: str, instance_labels: dict[str, str]) -> None:
    with client(target, token, "server-1") as one, client(target, token, "server-2") as two:
        first = one.create_session()
        try:
            expect(run_value(first, "1+1") == "2", "1+1 did not give 2 on server-1")
            ok(f"server-1: session {first.id} ran 1+1 = 2")
            for name, label in instance_labels.items():
                expect(bool(sandbox_containers(label)), f"no sandbox container of {name} (label {label}) on the host engine")
            ok("both servers run sandbox containers on the host's Docker engine")
            result = first.run(f"skills.create({skill!r}, {SKILL_SOURCE!r}, 'Double x')\n'saved'", timeout=60)
            expect(result.error is None, f"skills.create failed on server-1: {result.error}")
            ok(f"server-1: sandboxed code saved skill {skill!r}")

            # The shared registry: server-2 forwards calls for server-1's session to
            # server-1, so the state set through one is there through the other.
            expect(run_value(first, "shared_value = 20\nshared_value") == "20", "setting a value failed on server-1")
            try:
                through_two = two.get_session(first.id)
            except NotFoundError:
                raise CheckFailed(f"server-2 does not know server-1's session {first.id}: "
                                  "the session registry is not shared") from None
            expect(run_value(through_two, "shared_value + 22") == "42",
                   "server-2 did not reach server-1's interpreter for its session")
            ok(f"server-2 serves server-1's session {first.id} (forwarded: its state is there, shared_value + 22 = 42)")

            stored = two.skills.get(skill)
            expect(stored.source == SKILL_SOURCE, f"server-2 read another source for {skill!r}: {stored.source!r}")
            second = two.create_session()
            try:
                expect(run_value(second, f"skills.{skill}(x=21)") == "42", "the skill did not give 42 on server-2")
            finally:
                second.delete()
            ok(f"server-2 reads skill {skill!r} from the shared Redis (API and sandbox: {skill}(x=21) = 42)")
        finally:
            first.delete()


def check_affinity(target: str, token: str) -> None:
    with client(target, token) as creator:
        session = creator.create_session()
    try:
        for attempt in range(4):
            # A new Client is a new channel: a new connection to nginx, whose calls
            # nginx spreads over both instances.
            with client(target, token) as again:
                value = run_value(again.get_session(session.id), f"{attempt}+1")
                expect(value == str(attempt + 1), f"wrong result {value!r} on connection {attempt}")
        ok(f"unpinned calls (round robin over both instances) reach session {session.id} from 4 new connections")
    finally:
        with client(target, token) as cleanup:
            cleanup.delete_session(session.id)


def check_persistence(target: str, token: str, skill: str, compose: list[str]) -> None:
    config = subprocess.run(
        [*compose, "exec", "-T", "redis", "sh", "-c",
         "REDISCLI_AUTH=$(sed -n 's/^requirepass //p' /run/secrets/redis.conf) redis-cli --json CONFIG GET appendonly"
         " && ls /data/appendonlydir"],
        check=True, capture_output=True, text=True,
    ).stdout
    first_line, _, files = config.partition("\n")
    expect(json.loads(first_line).get("appendonly") == "yes", f"Redis runs without AOF: {first_line}")
    expect(".aof" in files, f"no AOF file in the volume: {files!r}")
    ok("Redis runs with appendonly yes, the AOF is on the volume")
    subprocess.run([*compose, "restart", "-t", "10", "redis"], check=True, capture_output=True)
    deadline = time.monotonic() + 60
    while True:
        try:
            with client(target, token, "server-2") as two:
                stored = two.skills.get(skill)
            break
        except NotFoundError:
            raise CheckFailed(f"skill {skill!r} is gone after a Redis restart: not persisted") from None
        except CodemodeError as exc:  # Redis still coming back
            if time.monotonic() > deadline:
                raise CheckFailed(f"server-2 cannot read skills 60 s after the Redis restart: {exc}") from None
            time.sleep(1)
    expect(stored.source == SKILL_SOURCE, "the skill changed across the Redis restart")
    ok(f"skill {skill!r} survives a Redis restart (AOF)")
    with client(target, token, "server-1") as one:
        one.skills.delete(skill)


def check_failover(target: str, token: str, compose: list[str]) -> None:
    with client(target, token, "server-2") as two:
        survivor = two.create_session()
    subprocess.run([*compose, "stop", "-t", "15", "server-1"], check=True, capture_output=True)
    for _ in range(8):
        # Calls go to both servers in turn; server-2 refuses each, which proves it answered.
        with client(target, "cm_" + uuid.uuid4().hex) as anyone:
            try:
                anyone.get_session("000000000000")
            except UnauthenticatedError:
                continue
            except CodemodeError as exc:
                raise CheckFailed(f"with server-1 stopped a call was not served by server-2: {exc!r}") from None
        raise CheckFailed("a call with a made-up token succeeded")
    ok("with server-1 stopped, calls of every token reach server-2")
    with client(target, token) as anyone:
        try:
            expect(run_value(anyone.get_session(survivor.id), "6*7") == "42", "6*7 did not give 42 on server-2")
        finally:
            anyone.delete_session(survivor.id)
    ok(f"with server-1 stopped, server-2's session {survivor.id} is served through nginx")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--target", required=True, help="nginx on loopback, 127.0.0.1:PORT")
    parser.add_argument("--token-file", required=True)
    parser.add_argument("--instance", action="append", default=[], metavar="NAME=LABEL",
                        help="server name and its sandbox instance label (dev.codemode.server-instance)")
    parser.add_argument("--compose", required=True, help="the docker compose command, JSON list")
    args = parser.parse_args()
    host = args.target.rsplit(":", 1)[0]
    if host not in ("127.0.0.1", "localhost", "[::1]"):
        print(f"compose-check: the target must be on loopback, not {args.target}", file=sys.stderr)
        return 2
    with open(args.token_file, encoding="utf-8") as handle:
        token = handle.read().strip()
    labels = dict(item.split("=", 1) for item in args.instance)
    compose = json.loads(args.compose)
    skill = f"compose_check_{uuid.uuid4().hex[:8]}"
    started = time.monotonic()
    try:
        check_health(args.target)
        check_auth(args.target)
        check_instances(args.target, token, skill, labels)
        check_affinity(args.target, token)
        check_persistence(args.target, token, skill, compose)
        check_failover(args.target, token, compose)
    except (CheckFailed, CodemodeError, grpc.RpcError, subprocess.CalledProcessError) as exc:
        detail = getattr(exc, "stderr", "") or ""
        print(f"compose-check: FAILED: {exc} {detail}".rstrip(), file=sys.stderr)
        return 1
    print(f"compose-check: all checks passed in {time.monotonic() - started:.1f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
