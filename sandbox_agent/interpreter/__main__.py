"""Entry point of the interpreter child: harden the process, then serve exec frames.

Usage (by the agent only): python -m sandbox_agent.interpreter --control-fd N
--agent-pid P --config JSON. Limits are applied here, after Python started, so
the agent needs no preexec_fn (unsafe in a threaded gRPC process).
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys

from sandbox_agent import protocol
from sandbox_agent.interpreter import hardening
from sandbox_agent.interpreter.namespaces import build_namespaces


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m sandbox_agent.interpreter")
    parser.add_argument("--control-fd", type=int, required=True)
    parser.add_argument("--agent-pid", type=int, required=True)
    parser.add_argument("--config", default="{}")
    args = parser.parse_args()
    config = json.loads(args.config)

    hardening.die_with_parent(args.agent_pid)
    hardening.apply_rlimits(config)
    hardening.drop_introspection_capabilities()
    os.set_inheritable(args.control_fd, False)
    sock = socket.socket(fileno=args.control_fd)
    sock.setblocking(True)

    from sandbox_agent.interpreter.runner import Runner

    Runner(protocol.BlockingChannel(sock), build_namespaces()).serve()
    sys.stdout.flush()
    os._exit(0)


if __name__ == "__main__":
    main()
