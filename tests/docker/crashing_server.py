"""A stand-in for a server that dies: starts one Docker sandbox, reports it, waits to be killed.

Run as `python crashing_server.py STATE_DIR INSTANCE_ID`; prints one JSON line
with the container id and host directory once the sandbox answers.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path[:0] = [ROOT, os.path.join(ROOT, "clients", "python", "src")]

from server.pki import CertificateAuthority  # noqa: E402
from server.providers.docker import DockerSandboxProvider  # noqa: E402
from server.providers.docker_config import DockerProviderConfig  # noqa: E402
from tests.docker.docker_helpers import limits  # noqa: E402


async def main(state_dir: str, instance_id: str) -> None:
    provider = DockerSandboxProvider(
        CertificateAuthority.create(), DockerProviderConfig(state_dir=state_dir, instance_id=instance_id)
    )
    sandbox = await provider.start(limits())
    print(json.dumps({"container_id": sandbox.container_id, "host_dir": sandbox.host_dir}), flush=True)
    await asyncio.sleep(3600)  # killed by the test long before


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2]))
