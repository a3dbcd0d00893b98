import sys

# bootstrap first: it spawns the interpreter before cli's heavy imports (asyncio, grpc).
from sandbox_agent.bootstrap import bootstrap

boot = bootstrap()

import asyncio  # noqa: E402

from sandbox_agent.cli import serve  # noqa: E402

sys.exit(asyncio.run(serve(boot)))
