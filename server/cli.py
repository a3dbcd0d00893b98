"""The ``codemode`` command: start the service, and talk to it from a shell.

``codemode serve`` runs the embedded default (process sandboxes, file storage,
127.0.0.1:50051). Every other subcommand is a thin shell over the Python client
(``codemode.Client``), so the CLI exercises exactly the API users get.

Exit codes of ``codemode run`` follow shell conventions so scripts can branch:
0 ok, 1 the code raised, 124 timeout (as timeout(1)), 130 cancelled (as Ctrl-C),
137 the interpreter died (as SIGKILL), 3 the service refused or failed the call,
2 bad usage, 141 the output pipe was closed (as SIGPIPE).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any, Callable, Sequence

EXIT_OK = 0
EXIT_CODE_ERROR = 1
EXIT_USAGE = 2
EXIT_SERVICE_ERROR = 3
EXIT_TIMEOUT = 124
EXIT_CANCELLED = 130
EXIT_SANDBOX_DIED = 137
EXIT_BROKEN_PIPE = 141

DEFAULT_TARGET = "127.0.0.1:50051"


def _status_exit_codes() -> dict[Any, int]:
    from codemode import ExecutionStatus

    return {
        ExecutionStatus.OK: EXIT_OK,
        ExecutionStatus.ERROR: EXIT_CODE_ERROR,
        ExecutionStatus.TIMEOUT: EXIT_TIMEOUT,
        ExecutionStatus.CANCELLED: EXIT_CANCELLED,
        ExecutionStatus.SANDBOX_DIED: EXIT_SANDBOX_DIED,
    }


# --- parser ---------------------------------------------------------------


def _client_options() -> argparse.ArgumentParser:
    """Connection flags shared by every subcommand that talks to a server."""
    parent = argparse.ArgumentParser(add_help=False)
    group = parent.add_argument_group("connection")
    group.add_argument(
        "--target",
        default=os.environ.get("CODEMODE_TARGET", DEFAULT_TARGET),
        help="server address, host:port or unix:/path (env CODEMODE_TARGET; default %(default)s)",
    )
    group.add_argument(
        "--token",
        default=os.environ.get("CODEMODE_API_TOKEN"),
        help="API token (env CODEMODE_API_TOKEN)",
    )
    group.add_argument("--tls", action="store_true", help="connect with TLS (system roots)")
    group.add_argument("--tls-ca", metavar="PEM", help="CA certificate to verify the server (implies --tls)")
    group.add_argument(
        "--deadline", type=float, default=30.0, help="seconds allowed for each non-execution call"
    )
    return parent


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="codemode", description="Run AI-agent Python code in isolated sandboxes."
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    conn = _client_options()

    serve = commands.add_parser("serve", help="run the codemode service")
    try:
        from server import config as server_config
    except ImportError:  # client-only install: serve is unavailable, the rest works
        serve.set_defaults(handler=_serve_unavailable)
    else:
        server_config.add_arguments(serve)
        serve.set_defaults(handler=cmd_serve)

    run = commands.add_parser("run", parents=[conn], help="run code and stream its output")
    run.add_argument("code", help="Python source, or - to read it from stdin")
    run.add_argument("--session", help="reuse this session (sessions/ID); default: a fresh one")
    run.add_argument("--timeout", type=float, help="execution timeout in seconds")
    run.set_defaults(handler=cmd_run)

    sessions = commands.add_parser("sessions", help="list or delete sessions")
    sessions_sub = sessions.add_subparsers(dest="action", metavar="ACTION", required=True)
    sessions_sub.add_parser("list", parents=[conn], help="list live sessions").set_defaults(
        handler=cmd_sessions_list
    )
    delete = sessions_sub.add_parser("delete", parents=[conn], help="delete a session")
    delete.add_argument("name", help="sessions/ID or ID")
    delete.set_defaults(handler=cmd_sessions_delete)

    skills = commands.add_parser("skills", help="manage the skill library")
    skills_sub = skills.add_subparsers(dest="action", metavar="ACTION", required=True)
    skills_sub.add_parser("list", parents=[conn], help="list skills").set_defaults(handler=cmd_skills_list)
    get = skills_sub.add_parser("get", parents=[conn], help="print a skill's source")
    get.add_argument("name")
    get.set_defaults(handler=cmd_skills_get)
    create = skills_sub.add_parser("create", parents=[conn], help="create a skill from a file")
    create.add_argument("name", nargs="?", help="skill name (default: the file's stem)")
    create.add_argument("--file", required=True, help="Python file defining async def run(...), or -")
    create.add_argument("--description", default="")
    create.set_defaults(handler=cmd_skills_create)
    sdel = skills_sub.add_parser("delete", parents=[conn], help="delete a skill")
    sdel.add_argument("name")
    sdel.set_defaults(handler=cmd_skills_delete)
    search = skills_sub.add_parser("search", parents=[conn], help="rank skills by relevance")
    search.add_argument("query")
    search.add_argument("--limit", type=int, default=0)
    search.set_defaults(handler=cmd_skills_search)

    deps = commands.add_parser("deps", help="manage a session's Python packages")
    deps_sub = deps.add_subparsers(dest="action", metavar="ACTION", required=True)
    session_flag = argparse.ArgumentParser(add_help=False)
    session_flag.add_argument("--session", required=True, help="sessions/ID or ID")
    deps_sub.add_parser("list", parents=[conn, session_flag], help="list configured packages").set_defaults(
        handler=cmd_deps_list
    )
    dadd = deps_sub.add_parser("add", parents=[conn, session_flag], help="install a package into the session")
    dadd.add_argument("package", help='requirement specifier, e.g. "pandas>=2.0"')
    dadd.set_defaults(handler=cmd_deps_add)
    dremove = deps_sub.add_parser("remove", parents=[conn, session_flag], help="remove a package from the session")
    dremove.add_argument("package")
    dremove.set_defaults(handler=cmd_deps_remove)
    deps_sub.add_parser("sync", parents=[conn, session_flag], help="install every missing configured package").set_defaults(
        handler=cmd_deps_sync
    )

    artifacts = commands.add_parser("artifacts", help="manage artifacts")
    art_sub = artifacts.add_subparsers(dest="action", metavar="ACTION", required=True)
    art_sub.add_parser("list", parents=[conn], help="list artifacts").set_defaults(
        handler=cmd_artifacts_list
    )
    aget = art_sub.add_parser("get", parents=[conn], help="write an artifact's data to stdout or a file")
    aget.add_argument("name")
    aget.add_argument("-o", "--output", help="file to write (default: stdout)")
    aget.set_defaults(handler=cmd_artifacts_get)
    put = art_sub.add_parser("put", parents=[conn], help="store a file as an artifact")
    put.add_argument("name")
    put.add_argument("file", help="file to upload, or -")
    put.add_argument("--type", choices=["bytes", "text", "json"], default="bytes")
    put.add_argument("--description", default="")
    put.set_defaults(handler=cmd_artifacts_put)
    adel = art_sub.add_parser("delete", parents=[conn], help="delete an artifact")
    adel.add_argument("name")
    adel.set_defaults(handler=cmd_artifacts_delete)
    return parser


# --- serve ----------------------------------------------------------------


def cmd_serve(args: argparse.Namespace) -> int:
    """Builds the config with the server's own rules, then runs ``server.app.serve``.

    Mirrors ``python -m server`` (same ready line on stdout) so scripts can use
    either; logging is configured before any gRPC object exists (grpc#43421).
    """
    import asyncio
    import logging

    from server import config as server_config

    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr
    )
    try:
        config = server_config.config_from_namespace(args)
    except server_config.ConfigError as error:
        print(f"codemode serve: {error}", file=sys.stderr)
        return EXIT_USAGE

    from server.__main__ import run

    return run(config, banner="codemode: serving on {address} (Ctrl-C to stop)")


def _serve_unavailable(args: argparse.Namespace) -> int:
    print("codemode serve: the server package is not installed (pip install codemode)", file=sys.stderr)
    return EXIT_USAGE


# --- client helpers -------------------------------------------------------


def _client(args: argparse.Namespace) -> Any:
    from codemode import Client, TLSConfig

    tls: Any = None
    if args.tls_ca:
        tls = TLSConfig(root_certificates=args.tls_ca)
    elif args.tls:
        tls = True
    return Client(args.target, token=args.token or None, tls=tls, default_deadline=args.deadline)


def _write(stream: Any, data: bytes) -> None:
    """Writes raw bytes and flushes, so output appears live even through a pipe.

    Falls back to text when the stream has no byte buffer (e.g. replaced by a
    test harness or an embedding program).
    """
    buffer = getattr(stream, "buffer", None)
    if buffer is None:
        stream.write(data.decode("utf-8", errors="replace"))
        stream.flush()
        return
    stream.flush()  # keep ordering with anything printed as text before
    buffer.write(data)
    buffer.flush()


def _read_source(path: str) -> str:
    if path == "-":
        return sys.stdin.read()
    with open(path, encoding="utf-8") as f:
        return f.read()


# --- run ------------------------------------------------------------------


def cmd_run(args: argparse.Namespace) -> int:
    code = _read_source(args.code) if args.code == "-" else args.code
    with _client(args) as client:
        if args.session:
            return _run_in(client.get_session(args.session), code, args.timeout)
        with client.create_session() as session:
            return _run_in(session, code, args.timeout)


def _run_in(session: Any, code: str, timeout: float | None) -> int:
    """Streams output as it arrives, then reports the value or the error."""
    from codemode import Output

    last_stdout = b"\n"
    execution = session.stream(code, timeout=timeout)
    try:
        for event in execution:
            if isinstance(event, Output):
                if event.dropped_bytes_before:
                    _write(sys.stderr, f"\n[codemode: {event.dropped_bytes_before} bytes dropped]\n".encode())
                if event.stream == "stderr":
                    _write(sys.stderr, event.data)
                elif event.data:
                    _write(sys.stdout, event.data)
                    last_stdout = event.data
        result = execution.result()
    except KeyboardInterrupt:
        execution.cancel()
        print("\ncodemode: cancelled", file=sys.stderr)
        return EXIT_CANCELLED
    finally:
        execution.cancel()

    if result.value_repr is not None:
        prefix = b"" if last_stdout.endswith(b"\n") else b"\n"
        _write(sys.stdout, prefix + result.value_repr.encode() + b"\n")
    if result.error is not None:
        _write(sys.stderr, (str(result.error).rstrip("\n") + "\n").encode())
    if result.state_lost and result.status.name != "OK":
        print("codemode: the interpreter was replaced; session state is lost", file=sys.stderr)
    return _status_exit_codes().get(result.status, EXIT_CODE_ERROR)


# --- sessions -------------------------------------------------------------


def cmd_sessions_list(args: argparse.Namespace) -> int:
    from codemode.v1 import session_pb2

    with _client(args) as client:
        for session in client.list_sessions():
            info = session.info
            state = session_pb2.Session.State.Name(info.state).removeprefix("STATE_")
            created = info.create_time.ToJsonString() if info.HasField("create_time") else "-"
            print(f"{info.name}\t{state}\tgeneration={info.interpreter_generation}\t{created}")
    return EXIT_OK


def cmd_sessions_delete(args: argparse.Namespace) -> int:
    with _client(args) as client:
        client.delete_session(args.name)
    return EXIT_OK


# --- skills ---------------------------------------------------------------


def cmd_skills_list(args: argparse.Namespace) -> int:
    with _client(args) as client:
        for skill in client.skills.list():
            params = ", ".join(p.name for p in skill.parameters)
            print(f"{skill.name}({params})\t{skill.description}")
    return EXIT_OK


def cmd_skills_get(args: argparse.Namespace) -> int:
    with _client(args) as client:
        skill = client.skills.get(args.name)
    sys.stdout.write(skill.source if skill.source.endswith("\n") else skill.source + "\n")
    return EXIT_OK


def cmd_skills_create(args: argparse.Namespace) -> int:
    source = _read_source(args.file)
    name = args.name or os.path.splitext(os.path.basename(args.file))[0]
    if not name or name == "-":
        print("codemode skills create: give a NAME when reading from stdin", file=sys.stderr)
        return EXIT_USAGE
    with _client(args) as client:
        skill = client.skills.create(name, source, description=args.description)
    print(f"{skill.name}\tversion={skill.version}\tetag={skill.etag}")
    return EXIT_OK


def cmd_skills_delete(args: argparse.Namespace) -> int:
    with _client(args) as client:
        client.skills.delete(args.name)
    return EXIT_OK


def cmd_skills_search(args: argparse.Namespace) -> int:
    with _client(args) as client:
        for hit in client.skills.search(args.query, limit=args.limit):
            print(f"{hit.score:.3f}\t{hit.skill.name}\t{hit.skill.description}")
    return EXIT_OK


# --- deps -----------------------------------------------------------------


def _session_deps(client: Any, args: argparse.Namespace) -> Any:
    """Looks the session up first, so a wrong name is reported as SESSION_NOT_FOUND."""
    return client.get_session(args.session).deps


def cmd_deps_list(args: argparse.Namespace) -> int:
    with _client(args) as client:
        for package in _session_deps(client, args).list():
            print(package)
    return EXIT_OK


def cmd_deps_add(args: argparse.Namespace) -> int:
    with _client(args) as client:
        added = _session_deps(client, args).add(args.package)
    note = "already present" if added.already_present else "installed"
    print(f"{added.package}\t{note}")
    return EXIT_OK


def cmd_deps_remove(args: argparse.Namespace) -> int:
    with _client(args) as client:
        removed = _session_deps(client, args).remove(args.package)
    if not removed.removed:
        print(f"codemode deps remove: {args.package} was not configured", file=sys.stderr)
    return EXIT_OK


def cmd_deps_sync(args: argparse.Namespace) -> int:
    with _client(args) as client:
        synced = _session_deps(client, args).sync()
    for package in synced.installed:
        print(f"{package}\tinstalled")
    return EXIT_OK


# --- artifacts ------------------------------------------------------------


def cmd_artifacts_list(args: argparse.Namespace) -> int:
    from codemode.v1 import artifact_pb2

    with _client(args) as client:
        for artifact in client.artifacts.list():
            kind = artifact_pb2.ArtifactType.Name(artifact.type).removeprefix("ARTIFACT_TYPE_").lower()
            print(f"{artifact.name}\t{kind}\t{artifact.size_bytes}\t{artifact.description}")
    return EXIT_OK


def cmd_artifacts_get(args: argparse.Namespace) -> int:
    with _client(args) as client:
        downloaded = client.artifacts.get(args.name)
    if args.output:
        with open(args.output, "wb") as f:
            f.write(downloaded.data)
    else:
        _write(sys.stdout, downloaded.data)
    return EXIT_OK


def cmd_artifacts_put(args: argparse.Namespace) -> int:
    if args.file == "-":
        data = sys.stdin.buffer.read()
    else:
        with open(args.file, "rb") as f:
            data = f.read()
    payload: Any = data
    if args.type == "text":
        payload = data.decode("utf-8")
    elif args.type == "json":
        payload = json.loads(data)
    with _client(args) as client:
        artifact = client.artifacts.put(args.name, payload, type=args.type, description=args.description)
    print(f"{artifact.name}\t{artifact.size_bytes}\tsha256={artifact.sha256}")
    return EXIT_OK


def cmd_artifacts_delete(args: argparse.Namespace) -> int:
    with _client(args) as client:
        client.artifacts.delete(args.name)
    return EXIT_OK


# --- entry point ----------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    """Console-script entry (``codemode``); returns the process exit code."""
    args = build_parser().parse_args(argv)
    handler: Callable[[argparse.Namespace], int] = args.handler
    try:
        return handler(args)
    except KeyboardInterrupt:
        return EXIT_CANCELLED
    except BrokenPipeError:
        # `codemode run ... | head -1`: the reader left; the session was already
        # cleaned up on the way out. Silence the flush at exit, like other tools.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_BROKEN_PIPE
    except Exception as error:  # noqa: BLE001 - map service errors to a message + exit code
        from codemode import CodemodeError

        if isinstance(error, CodemodeError):
            print(f"codemode: {error}", file=sys.stderr)
            return EXIT_SERVICE_ERROR
        if isinstance(error, (OSError, ValueError)):
            print(f"codemode: {error}", file=sys.stderr)
            return EXIT_USAGE
        raise


if __name__ == "__main__":
    sys.exit(main())
