// TypeScript client side of bench/clients: writes raw samples as JSON to CODEMODE_BENCH_OUT.
// Plain ESM over the built package (clients/typescript/dist), so no second build step.
import { writeFileSync } from "node:fs";
import { performance } from "node:perf_hooks";
import { CodemodeClient } from "../../../clients/typescript/dist/index.js";

const ROUND_TRIP_CODE = "1+1";
const FIRST_STDOUT_CODE = "import time\nprint('a', flush=True)\ntime.sleep(0.5)";
const env = (name) => Number.parseInt(process.env[name] ?? "", 10);
const [warmup, rounds, first] = [env("BENCH_WARMUP"), env("BENCH_ROUNDS"), env("BENCH_FIRST_STDOUT")];

const client = new CodemodeClient(process.env.CODEMODE_CONFORMANCE_TARGET, {
  token: process.env.CODEMODE_CONFORMANCE_TOKEN,
  tls: false,
});
const samples = { round_trip_ms: [], first_stdout_ms: [] };
const session = await client.createSession();
try {
  for (let i = 0; i < warmup + rounds; i++) {
    const start = performance.now();
    const result = await session.run(ROUND_TRIP_CODE);
    const elapsed = performance.now() - start;
    if (result.value?.json !== "2") throw new Error(`1+1 gave ${JSON.stringify(result.value)}`);
    if (i >= warmup) samples.round_trip_ms.push(elapsed);
  }
  for (let i = 0; i < first; i++) {
    const start = performance.now();
    let seen = false;
    for await (const event of session.stream(FIRST_STDOUT_CODE)) {
      if (event.event.case === "output" && !seen) {
        seen = true;
        samples.first_stdout_ms.push(performance.now() - start);
      }
    }
  }
} finally {
  await session.close();
}
writeFileSync(process.env.CODEMODE_BENCH_OUT, JSON.stringify(samples));
