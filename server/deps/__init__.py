"""Python packages for sandboxes, provider-neutral.

`specs` validates and normalizes requirement specifiers, `installer` runs
`pip install --target` on the host (cached by package set), `provisioner` is
the one service the app builds from the config and injects into every
provider (it owns the source, the installers per target interpreter and the
cache), `session_deps` holds one sandbox's configured set and runtime install
dir, `host_calls` serves the `deps.*` calls of sandboxed code. Process and
Docker sandboxes use the same code; they differ only in the interpreter they
declare (`DepsTarget`) and in how the directories reach its import path.
"""
