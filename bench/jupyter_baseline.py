"""Baseline (c): a Jupyter kernel (ipykernel + jupyter_client), the usual way
agents get a stateful Python today, measured with the same code as ours.

Uses the blocking client: ZMQ messages queue in the socket until read, and the
kernel sends execute_result before execute_reply, so "reply read, then result
read" ends exactly when the later of the two has arrived.
"""

from __future__ import annotations

import time
from typing import Any

from jupyter_client.blocking.client import BlockingKernelClient
from jupyter_client.manager import KernelManager, start_new_kernel

MESSAGE_TIMEOUT = 60.0


class JupyterKernel:
    """One ipykernel process and a blocking client connected to it over loopback TCP."""

    def __init__(self) -> None:
        self.manager: KernelManager
        self.client: BlockingKernelClient
        self.manager, self.client = start_new_kernel(kernel_name="python3", startup_timeout=120)

    def close(self) -> None:
        self.client.stop_channels()
        self.manager.shutdown_kernel(now=True)

    def _iopub_for(self, msg_id: str) -> dict[str, Any]:
        while True:
            message = self.client.get_iopub_msg(timeout=MESSAGE_TIMEOUT)
            if message.get("parent_header", {}).get("msg_id") == msg_id:
                return message

    def _finish(self, msg_id: str) -> None:
        """Read the reply and drain iopub to the idle status, so runs never overlap."""
        reply = self.client.get_shell_msg(timeout=MESSAGE_TIMEOUT)
        if reply["content"].get("status") != "ok":
            raise RuntimeError(f"kernel error: {reply['content']}")
        while True:
            message = self._iopub_for(msg_id)
            if message["msg_type"] == "status" and message["content"]["execution_state"] == "idle":
                return

    def round_trip(self, code: str) -> float:
        """Seconds from sending `code` until both its reply and its execute_result were received."""
        started = time.perf_counter()
        msg_id = self.client.execute(code)
        reply = self.client.get_shell_msg(timeout=MESSAGE_TIMEOUT)
        while True:
            message = self._iopub_for(msg_id)
            if message["msg_type"] == "execute_result":
                break
        elapsed = time.perf_counter() - started
        if reply["content"].get("status") != "ok":
            raise RuntimeError(f"kernel error: {reply['content']}")
        while True:  # drain to idle
            message = self._iopub_for(msg_id)
            if message["msg_type"] == "status" and message["content"]["execution_state"] == "idle":
                break
        return elapsed

    def first_stdout(self, code: str) -> float:
        """Seconds from sending `code` until its first stream message arrived."""
        started = time.perf_counter()
        msg_id = self.client.execute(code)
        while True:
            message = self._iopub_for(msg_id)
            if message["msg_type"] == "stream":
                elapsed = time.perf_counter() - started
                break
        self._finish(msg_id)
        return elapsed

    def run(self, code: str) -> None:
        msg_id = self.client.execute(code)
        self._finish(msg_id)


def measure(round_trips: int, first_stdout_runs: int, warmup: int, stdout_code: str) -> dict[str, list[float]]:
    kernel = JupyterKernel()
    try:
        kernel.run("import time")
        for _ in range(warmup):
            kernel.round_trip("1+1")
        one_plus_one = [kernel.round_trip("1+1") for _ in range(round_trips)]
        kernel.first_stdout(stdout_code)  # warm the stream path once
        first = [kernel.first_stdout(stdout_code) for _ in range(first_stdout_runs)]
        return {"one_plus_one": one_plus_one, "first_stdout": first}
    finally:
        kernel.close()
