// Java client side of bench/clients: writes raw samples as JSON to CODEMODE_BENCH_OUT.
// Run in source-file mode (java -cp <client classpath> ClientBench.java), so no build of its own.
import dev.codemode.client.CodemodeClient;
import dev.codemode.client.ExecutionStream;
import dev.codemode.client.RunResult;
import dev.codemode.client.Session;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.stream.Collectors;

public class ClientBench {
  static final String ROUND_TRIP_CODE = "1+1";
  static final String FIRST_STDOUT_CODE = "import time\nprint('a', flush=True)\ntime.sleep(0.5)";

  public static void main(String[] args) throws Exception {
    int warmup = Integer.parseInt(System.getenv("BENCH_WARMUP"));
    int rounds = Integer.parseInt(System.getenv("BENCH_ROUNDS"));
    int first = Integer.parseInt(System.getenv("BENCH_FIRST_STDOUT"));
    List<Double> roundTrip = new ArrayList<>();
    List<Double> firstStdout = new ArrayList<>();
    try (CodemodeClient client =
            CodemodeClient.builder(System.getenv("CODEMODE_CONFORMANCE_TARGET"))
                .plaintext()
                .token(System.getenv("CODEMODE_CONFORMANCE_TOKEN"))
                .build();
        Session session = client.createSession()) {
      for (int i = 0; i < warmup + rounds; i++) {
        long start = System.nanoTime();
        RunResult result = session.run(ROUND_TRIP_CODE);
        long elapsed = System.nanoTime() - start;
        if (!result.value().map(v -> v.getJson()).orElse("").equals("2")) {
          throw new IllegalStateException("1+1 gave " + result);
        }
        if (i >= warmup) {
          roundTrip.add(elapsed / 1e6);
        }
      }
      for (int i = 0; i < first; i++) {
        long start = System.nanoTime();
        boolean seen = false;
        try (ExecutionStream events = session.stream(FIRST_STDOUT_CODE)) {
          while (events.hasNext()) {
            if (events.next().hasOutput() && !seen) {
              seen = true;
              firstStdout.add((System.nanoTime() - start) / 1e6);
            }
          }
        }
      }
    }
    String json =
        "{\"round_trip_ms\": " + list(roundTrip) + ", \"first_stdout_ms\": " + list(firstStdout) + "}";
    Files.writeString(Path.of(System.getenv("CODEMODE_BENCH_OUT")), json);
  }

  static String list(List<Double> values) {
    return values.stream().map(String::valueOf).collect(Collectors.joining(", ", "[", "]"));
  }
}
