import sys

from sandbox_agent.cli import main

sys.exit(main())
