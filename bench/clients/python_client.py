"""Python client side of bench/clients: writes raw samples as JSON to CODEMODE_BENCH_OUT."""

from __future__ import annotations

import json
import os
import time

import codemode

ROUND_TRIP_CODE = "1+1"
FIRST_STDOUT_CODE = "import time\nprint('a', flush=True)\ntime.sleep(0.5)"


def main() -> None:
    target, token = os.environ["CODEMODE_CONFORMANCE_TARGET"], os.environ["CODEMODE_CONFORMANCE_TOKEN"]
    warmup, rounds, first = (int(os.environ[k]) for k in ("BENCH_WARMUP", "BENCH_ROUNDS", "BENCH_FIRST_STDOUT"))
    samples: dict[str, list[float]] = {"round_trip_ms": [], "first_stdout_ms": []}
    with codemode.Client(target, token=token) as client, client.create_session() as session:
        for i in range(warmup + rounds):
            start = time.perf_counter()
            result = session.run(ROUND_TRIP_CODE)
            elapsed = (time.perf_counter() - start) * 1000
            assert result.value == 2, result
            if i >= warmup:
                samples["round_trip_ms"].append(elapsed)
        for _ in range(first):
            start = time.perf_counter()
            with session.stream(FIRST_STDOUT_CODE) as execution:
                for event in execution:
                    if isinstance(event, codemode.Output):
                        samples["first_stdout_ms"].append((time.perf_counter() - start) * 1000)
                        break
                execution.result()  # let it finish so the next run finds the session idle
    with open(os.environ["CODEMODE_BENCH_OUT"], "w", encoding="utf-8") as handle:
        json.dump(samples, handle)


if __name__ == "__main__":
    main()
