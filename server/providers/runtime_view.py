"""A private mount namespace in which a root server's runtime is reachable by sandbox uids.

bubblewrap runs unprivileged, as the sandbox's own host uid, so it can only bind what
that uid can reach. A root server's Python often lives under /root (mode 0700), and
its data dir is 0700 too. Rather than loosen host permissions, one holder process
per provider keeps a mount namespace where those trees are bind-mounted read-only
under /mnt (a tmpfs there, invisible to the host); bubblewrap is started inside it
with `nsenter`. The holder dies with the server (PDEATHSIG), and the namespace with it.

An unprivileged server builds the same view inside a user namespace of its own, in
which it is root and its subordinate ids are mapped (`SubordinateIds`): there it may
mount, and switch to a sandbox's id, which on the host is a subordinate uid that is
neither root nor the server's.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import shutil
import subprocess

from server.providers.sandbox_uids import SubordinateIds

VIEW_ROOT = "/mnt"


class RuntimeViewError(RuntimeError):
    """The holder namespace could not be built; the message says why."""


class RuntimeViewNamespace:
    """Maps host paths to their read-only view paths inside the holder's namespace."""

    def __init__(self, sources: list[str], ids: SubordinateIds | None = None) -> None:
        tools = ["unshare", "nsenter", "setpriv", "mount"] + (["newuidmap", "newgidmap"] if ids else [])
        for tool in tools:
            if shutil.which(tool) is None:
                package = "uidmap" if tool.startswith("new") else "util-linux"
                raise RuntimeViewError(f"{tool} (Debian package {package}) is missing")
        self.ids = ids
        self.views = {source: f"{VIEW_ROOT}/{index}" for index, source in enumerate(sources)}
        script = ["set -e", f"mount -t tmpfs -o mode=0755,size=1m codemode-view {VIEW_ROOT}"]
        for source, view in self.views.items():
            script += [f"mkdir -p {view}", f"mount --rbind {shlex.quote(source)} {view}",
                       f"mount -o remount,bind,ro {view}"]  # fmt: skip
        script += ["echo ready", "exec sleep infinity"]
        self._holder = subprocess.Popen(
            ["setpriv", "--pdeathsig", "KILL", "--", "unshare", *(ids.map_arguments() if ids else ()),
             "--mount", "--propagation", "private", "--", "/bin/sh", "-c", "\n".join(script)],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )  # fmt: skip
        assert self._holder.stdout is not None
        line = self._holder.stdout.readline()
        if line.strip() != b"ready":
            self._holder.kill()
            _, stderr = self._holder.communicate(timeout=5)
            raise RuntimeViewError(f"cannot build the sandbox runtime view: {stderr.decode(errors='replace').strip()}")

    def view_of(self, host_path: str) -> str:
        """The path under which bubblewrap (as the sandbox uid) finds `host_path`."""
        for source, view in self.views.items():
            if host_path == source:
                return view
            if host_path.startswith(source + os.sep):
                return view + host_path[len(source) :]
        raise KeyError(host_path)

    def enter_prefix(self) -> list[str]:
        """nsenter into the holder's namespaces (its user namespace first, as root there,
        when the server is unprivileged)."""
        user = [f"--user=/proc/{self._holder.pid}/ns/user"] if self.ids else []
        return ["nsenter", *user, f"--mount=/proc/{self._holder.pid}/ns/mnt", "--"]

    def alive(self) -> bool:
        return self._holder.poll() is None

    def close(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            self._holder.kill()
        with contextlib.suppress(Exception):
            self._holder.wait(timeout=5)
