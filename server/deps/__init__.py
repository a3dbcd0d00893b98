"""Python packages for sandboxes, provider-neutral.

`specs` validates and normalizes requirement specifiers, `installer` runs
`pip install --target` on the host (cached by package set), `session_deps`
holds one sandbox's configured set and runtime install dir, `host_calls`
serves the `deps.*` calls of sandboxed code. Process and Docker sandboxes
use the same code; they differ only in how the directories reach the
interpreter's import path.
"""
