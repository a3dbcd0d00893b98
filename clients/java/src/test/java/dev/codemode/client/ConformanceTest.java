package dev.codemode.client;

import static org.junit.jupiter.api.Assertions.fail;

import com.google.gson.JsonArray;
import com.google.gson.JsonElement;
import com.google.gson.JsonObject;
import com.google.gson.JsonParser;
import com.google.protobuf.ByteString;
import dev.codemode.v1.Artifact;
import dev.codemode.v1.ArtifactType;
import dev.codemode.v1.DeleteSessionRequest;
import dev.codemode.v1.ExecuteResponse;
import dev.codemode.v1.ExecutionError;
import dev.codemode.v1.ExecutionFinished;
import dev.codemode.v1.ExecutionOutput;
import dev.codemode.v1.ExecutionResult;
import dev.codemode.v1.GetSessionRequest;
import dev.codemode.v1.ListSessionsRequest;
import dev.codemode.v1.ListSessionsResponse;
import dev.codemode.v1.OutputStream;
import dev.codemode.v1.SessionConfig;
import dev.codemode.v1.Skill;
import io.grpc.Status;
import io.grpc.StatusRuntimeException;
import java.io.ByteArrayOutputStream;
import java.io.IOException;
import java.io.InputStream;
import java.io.UncheckedIOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.security.MessageDigest;
import java.security.NoSuchAlgorithmException;
import java.security.SecureRandom;
import java.time.Duration;
import java.util.ArrayList;
import java.util.HexFormat;
import java.util.List;
import java.util.Map;
import java.util.stream.Stream;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.Assumptions;
import org.junit.jupiter.api.DynamicContainer;
import org.junit.jupiter.api.DynamicNode;
import org.junit.jupiter.api.DynamicTest;
import org.junit.jupiter.api.TestFactory;

/**
 * The Java client against conformance/cases.json. Field semantics are defined in
 * conformance/README.md and shared with the Python, Go and TypeScript runners. Run through
 * conformance/with_server.py, which starts a real server and passes its address in
 * CODEMODE_CONFORMANCE_TARGET.
 */
class ConformanceTest {
  private static final Duration RETRY_WHILE_BUSY = Duration.ofSeconds(30);
  private static final Duration STEP_DEADLINE = Duration.ofSeconds(90);
  private static final List<CodemodeClient> OPENED = new ArrayList<>();
  /** Steps that act on the case's session, so the runner creates one for them. */
  private static final List<String> SESSION_STEPS =
      List.of("list_dependencies", "add_dependency", "get_session", "delete_session", "list_sessions");
  private static String TOKEN = "";

  /** What one execute step produced, in arrival order. */
  private static final class Observed {
    final List<ExecutionOutput> outputs = new ArrayList<>();
    ExecutionResult result;
    ExecutionError error;
    ExecutionFinished finished;
    long firstOutputAt = -1;
    long finishedAt = -1;
    /** How many output events had arrived when the result event did; -1 without a result. */
    int outputsBeforeResult = -1;
    CodemodeException callError;
    boolean cancelled;

    String text(OutputStream stream) {
      ByteString all = ByteString.EMPTY;
      for (ExecutionOutput output : outputs) {
        if (output.getStream() == stream) {
          all = all.concat(output.getData());
        }
      }
      return all.toString(StandardCharsets.UTF_8);
    }
  }

  @AfterAll
  static void closeClients() {
    OPENED.forEach(CodemodeClient::close);
  }

  @TestFactory
  Stream<DynamicNode> conformance() throws IOException {
    String target = System.getenv().getOrDefault("CODEMODE_CONFORMANCE_TARGET", "");
    String token = System.getenv().getOrDefault("CODEMODE_CONFORMANCE_TOKEN", "");
    if (target.isEmpty()) {
      if (System.getenv("CI") != null) {
        fail("CODEMODE_CONFORMANCE_TARGET is required under CI (run via conformance/with_server.py)");
      }
      Assumptions.abort("no server: run via `python conformance/with_server.py mvn test`");
    }
    TOKEN = token;
    // Every case as the token principal and, over mTLS, as the mTLS principal.
    List<String> principals =
        System.getenv().getOrDefault("CODEMODE_CONFORMANCE_CA", "").isEmpty()
            ? List.of("token")
            : List.of("token", "mtls");
    List<DynamicNode> runs = new ArrayList<>();
    for (String principal : principals) {
      Map<String, CodemodeClient> clients = principalClients(target, token, principal);
      List<DynamicTest> tests = new ArrayList<>();
      for (JsonObject c : loadCases(principal)) {
        tests.add(DynamicTest.dynamicTest(c.get("name").getAsString(), () -> runCase(clients, c)));
      }
      runs.add(DynamicContainer.dynamicContainer(principal, tests));
    }
    return runs.stream();
  }

  /** The `auth` clients of one principal's run (conformance/README.md, "Principals"). */
  private static Map<String, CodemodeClient> principalClients(String target, String token, String principal)
      throws IOException {
    String own = principal.equals("mtls") ? "CLIENT" : "UNMAPPED";
    return Map.of(
        "principal", open(transport(target, own).token(principal.equals("mtls") ? "" : token)),
        "none", open(transport(target, "UNMAPPED")),
        "wrong", open(transport(target, own).token(token + "-wrong")),
        "other_tenant",
            open(
                transport(target, "UNMAPPED")
                    .token(System.getenv().getOrDefault("CODEMODE_CONFORMANCE_OTHER_TOKEN", ""))));
  }

  /**
   * mTLS presenting the named client certificate (CLIENT or UNMAPPED) when the harness started
   * the server with --mtls, else plaintext.
   */
  private static CodemodeClient.Builder transport(String target, String certificate) throws IOException {
    String ca = System.getenv().getOrDefault("CODEMODE_CONFORMANCE_CA", "");
    if (ca.isEmpty()) {
      return CodemodeClient.builder(target).plaintext();
    }
    return CodemodeClient.builder(target)
        .trustedCa(Files.readString(Path.of(ca)))
        .clientCertificate(
            Files.readString(Path.of(System.getenv("CODEMODE_CONFORMANCE_" + certificate + "_CERT"))),
            Files.readString(Path.of(System.getenv("CODEMODE_CONFORMANCE_" + certificate + "_KEY"))));
  }

  private static CodemodeClient open(CodemodeClient.Builder builder) {
    CodemodeClient client = builder.build();
    OPENED.add(client);
    return client;
  }

  private static List<JsonObject> loadCases(String principal) throws IOException {
    Path path = Path.of(System.getProperty("codemode.conformance.cases", "../../conformance/cases.json"));
    byte[] suffix = new byte[4];
    new SecureRandom().nextBytes(suffix);
    String raw =
        Files.readString(path)
            .replace("${uid}", "java" + principal + HexFormat.of().formatHex(suffix));
    List<JsonObject> cases = new ArrayList<>();
    for (JsonElement c : JsonParser.parseString(raw).getAsJsonObject().getAsJsonArray("cases")) {
      cases.add(c.getAsJsonObject());
    }
    return cases;
  }

  private static void runCase(Map<String, CodemodeClient> clients, JsonObject c) {
    CodemodeClient client = clients.get("principal").withDeadline(STEP_DEADLINE);
    if (c.has("requires") && c.get("requires").getAsString().equals("skills")) {
      try {
        client.skills("").search("probe", 1);
      } catch (CodemodeException e) {
        Assumptions.assumeFalse(
            e.code() == Status.Code.UNIMPLEMENTED, "the server does not implement SkillStoreService");
        throw e;
      }
    }
    JsonArray steps = c.getAsJsonArray("steps");
    boolean needsSession = false;
    for (JsonElement step : steps) {
      JsonObject s = step.getAsJsonObject();
      needsSession |= s.has("execute") && !s.getAsJsonObject("execute").has("session");
      for (String kind : SESSION_STEPS) {
        needsSession |= s.has(kind);
      }
    }
    SessionConfig.Builder config = SessionConfig.newBuilder();
    if (c.has("session")) {
      JsonObject wanted = c.getAsJsonObject("session");
      if (wanted.has("output_budget_bytes")) {
        config.setOutputBudgetBytes(wanted.get("output_budget_bytes").getAsLong());
      }
      if (wanted.has("deps")) {
        wanted.getAsJsonArray("deps").forEach(dep -> config.addDeps(dep.getAsString()));
      }
    }
    // try-with-resources deletes the session however the case ends.
    try (Session session = needsSession ? client.createSession(config.build()) : null) {
      for (int i = 0; i < steps.size(); i++) {
        JsonObject step = steps.get(i).getAsJsonObject();
        try {
          runStep(clients, session, step);
        } catch (AssertionError e) {
          throw new AssertionError(
              "step " + (i + 1) + " (" + step.keySet().iterator().next() + "): " + e.getMessage(), e);
        }
      }
    }
  }

  private static void runStep(Map<String, CodemodeClient> clients, Session session, JsonObject step) {
    JsonObject expect = step.has("expect") ? step.getAsJsonObject("expect") : new JsonObject();
    CodemodeClient base = clients.get(step.has("auth") ? str(step, "auth") : "principal");
    String tenant = str(step, "tenant");
    if (step.has("execute")) {
      checkExecute(execute(base, session, step.getAsJsonObject("execute")), expect);
      return;
    }
    if (step.has("close_session")) {
      session.close();
      return;
    }
    if (step.has("plaintext_client")) {
      checkPlaintextClient(str(step.getAsJsonObject("plaintext_client"), "target"), expect);
      return;
    }
    CodemodeClient client = base.withDeadline(STEP_DEADLINE);
    if (runSessionStep(client, session, step, expect, tenant)
        || runArtifactOrDepsStep(client, session, step, expect, tenant)) {
      return;
    }
    Skills skills = client.skills(tenant);
    Skill skill = null;
    try {
      if (step.has("create_skill")) {
        JsonObject spec = step.getAsJsonObject("create_skill");
        skill = skills.create(str(spec, "id"), str(spec, "description"), str(spec, "source"));
      } else if (step.has("update_skill")) {
        JsonObject spec = step.getAsJsonObject("update_skill");
        skill = skills.update(str(spec, "id"), str(spec, "description"), str(spec, "source"), str(spec, "etag"));
      } else if (step.has("get_skill")) {
        skill = skills.get(str(step.getAsJsonObject("get_skill"), "id"));
      } else if (step.has("search_skills")) {
        List<String> names = new ArrayList<>();
        skills.search(str(step.getAsJsonObject("search_skills"), "query"), 0)
            .forEach(hit -> names.add(hit.getSkill().getName()));
        checkNames(names, expect, "search results");
      } else if (step.has("delete_skill")) {
        skills.delete(str(step.getAsJsonObject("delete_skill"), "id"));
      } else {
        fail("unknown step " + step);
      }
    } catch (CodemodeException e) {
      checkCallError(e, expect);
      return;
    }
    if (expect.has("error_status")) {
      fail("expected " + expect.getAsJsonObject("error_status") + ", the call succeeded");
    }
    if (expect.has("name") && !skill.getName().equals(str(expect, "name"))) {
      fail("skill name " + skill.getName() + ", want " + str(expect, "name"));
    }
    if (expect.has("source_contains") && !skill.getSource().contains(str(expect, "source_contains"))) {
      fail("source " + skill.getSource() + " lacks " + str(expect, "source_contains"));
    }
  }

  /**
   * Runs a session step; false when the step is of another kind. The client wraps no
   * GetSession/ListSessions, and Session.close() forgives NOT_FOUND: these call the generated
   * stub it holds.
   */
  private static boolean runSessionStep(
      CodemodeClient client, Session session, JsonObject step, JsonObject expect, String tenant) {
    try {
      if (step.has("get_session")) {
        var info =
            client.sessions.getSession(GetSessionRequest.newBuilder().setName(session.name()).build()).getSession();
        noErrorExpected(expect);
        if (expect.has("session_tenant") && !info.getTenant().equals(str(expect, "session_tenant"))) {
          fail("session tenant " + quote(info.getTenant()) + ", want " + quote(str(expect, "session_tenant")));
        }
      } else if (step.has("delete_session")) {
        client.sessions.deleteSession(DeleteSessionRequest.newBuilder().setName(session.name()).build());
        noErrorExpected(expect);
      } else if (step.has("list_sessions")) {
        List<String> names = new ArrayList<>();
        String pageToken = "";
        do {
          ListSessionsResponse page =
              client.sessions.listSessions(
                  ListSessionsRequest.newBuilder().setTenant(tenant).setPageToken(pageToken).build());
          page.getSessionsList().forEach(listed -> names.add(listed.getName()));
          pageToken = page.getNextPageToken();
        } while (!pageToken.isEmpty());
        noErrorExpected(expect);
        boolean listed = names.contains(session.name());
        if (expect.has("lists_case_session") && listed != expect.get("lists_case_session").getAsBoolean()) {
          fail("case session " + session.name() + " listed: " + listed + " (" + names + ")");
        }
      } else {
        return false;
      }
    } catch (StatusRuntimeException e) {
      checkCallError(CodemodeException.from(e), expect);
    }
    return true;
  }

  private static void checkNames(List<String> names, JsonObject expect, String what) {
    if (expect.has("contains_name") && !names.contains(str(expect, "contains_name"))) {
      fail(str(expect, "contains_name") + " not in " + what + " " + names);
    }
    if (expect.has("lacks_name") && names.contains(str(expect, "lacks_name"))) {
      fail(str(expect, "lacks_name") + " in " + what + " " + names);
    }
  }

  /** Runs an artifact or dependency step; false when the step is of another kind. */
  private static boolean runArtifactOrDepsStep(
      CodemodeClient client, Session session, JsonObject step, JsonObject expect, String tenant) {
    Artifacts artifacts = client.artifacts(tenant);
    try {
      if (step.has("upload_artifact")) {
        JsonObject spec = step.getAsJsonObject("upload_artifact");
        byte[] piece = str(spec, "data").getBytes(StandardCharsets.UTF_8);
        int repeat = spec.has("repeat") ? spec.get("repeat").getAsInt() : 1;
        ArtifactOptions options =
            ArtifactOptions.type(ArtifactType.valueOf("ARTIFACT_TYPE_" + str(spec, "type")))
                .withDescription(str(spec, "description"));
        // The Java way to stream an upload: any InputStream.
        checkArtifact(artifacts.upload(str(spec, "id"), repeated(piece, repeat), options), expect);
      } else if (step.has("get_artifact")) {
        checkArtifact(artifacts.get(str(step.getAsJsonObject("get_artifact"), "id")), expect);
      } else if (step.has("download_artifact")) {
        // The Java way to stream a download: any OutputStream.
        ByteArrayOutputStream data = new ByteArrayOutputStream();
        Artifact artifact = artifacts.download(str(step.getAsJsonObject("download_artifact"), "id"), data);
        checkArtifact(artifact, expect);
        checkDownloaded(artifact, data.toByteArray(), expect);
      } else if (step.has("list_artifacts")) {
        checkNames(artifacts.list().stream().map(Artifact::getName).toList(), expect, "artifacts");
        noErrorExpected(expect);
      } else if (step.has("delete_artifact")) {
        artifacts.delete(str(step.getAsJsonObject("delete_artifact"), "id"));
        noErrorExpected(expect);
      } else if (step.has("list_dependencies")) {
        checkDependencies(session.withDeadline(STEP_DEADLINE).deps().list(), expect);
      } else if (step.has("add_dependency")) {
        String pkg = str(step.getAsJsonObject("add_dependency"), "package");
        checkDependencies(session.withDeadline(STEP_DEADLINE).deps().add(pkg).getDependenciesList(), expect);
      } else {
        return false;
      }
    } catch (CodemodeException e) {
      checkCallError(e, expect);
    } catch (IOException e) {
      throw new UncheckedIOException(e);
    }
    return true;
  }

  /** {@code piece} repeated {@code times}, produced as it is read (never whole in memory). */
  private static InputStream repeated(byte[] piece, int times) {
    return new InputStream() {
      private long position;
      private final long length = (long) piece.length * times;

      @Override
      public int read() {
        return position < length ? piece[(int) (position++ % piece.length)] & 0xff : -1;
      }

      @Override
      public int read(byte[] buffer, int offset, int count) {
        if (position >= length) {
          return -1;
        }
        int n = (int) Math.min(count, length - position);
        for (int i = 0; i < n; i++) {
          buffer[offset + i] = piece[(int) (position++ % piece.length)];
        }
        return n;
      }
    };
  }

  private static void noErrorExpected(JsonObject expect) {
    if (expect.has("error_status")) {
      fail("expected " + expect.getAsJsonObject("error_status") + ", the call succeeded");
    }
  }

  private static void checkArtifact(Artifact artifact, JsonObject expect) {
    noErrorExpected(expect);
    if (!expect.has("artifact")) {
      return;
    }
    JsonObject wanted = expect.getAsJsonObject("artifact");
    Map<String, Object> got =
        Map.of(
            "name", artifact.getName(),
            "type", artifact.getType().name().replaceFirst("^ARTIFACT_TYPE_", ""),
            "description", artifact.getDescription(),
            "size_bytes", artifact.getSizeBytes(),
            "sha256", artifact.getSha256());
    for (String key : wanted.keySet()) {
      Object value = got.get(key);
      boolean same =
          value instanceof Long number
              ? number == wanted.get(key).getAsLong()
              : value.equals(wanted.get(key).getAsString());
      if (!same) {
        fail("artifact " + key + " " + value + ", want " + wanted.get(key));
      }
    }
  }

  private static void checkDownloaded(Artifact artifact, byte[] data, JsonObject expect) {
    if (expect.has("data_sha256")) {
      String digest;
      try {
        digest = HexFormat.of().formatHex(MessageDigest.getInstance("SHA-256").digest(data));
      } catch (NoSuchAlgorithmException e) {
        throw new IllegalStateException(e);
      }
      if (!digest.equals(str(expect, "data_sha256"))) {
        fail("downloaded " + data.length + " bytes with sha256 " + digest);
      }
      if (!artifact.getSha256().equals(digest)) {
        fail("artifact sha256 " + artifact.getSha256() + " differs from the data's " + digest);
      }
    }
    if (expect.has("data_json")) {
      JsonElement got = JsonParser.parseString(new String(data, StandardCharsets.UTF_8));
      if (!jsonEquals(got, expect.get("data_json"))) {
        fail("downloaded " + got + ", want " + expect.get("data_json"));
      }
    }
  }

  private static void checkDependencies(List<String> dependencies, JsonObject expect) {
    noErrorExpected(expect);
    if (expect.has("dependencies")) {
      List<String> wanted = new ArrayList<>();
      expect.getAsJsonArray("dependencies").forEach(e -> wanted.add(e.getAsString()));
      if (!dependencies.equals(wanted)) {
        fail("dependencies " + dependencies + ", want " + wanted);
      }
    }
  }

  private static void checkPlaintextClient(String target, JsonObject expect) {
    CodemodeClient client;
    try {
      client = CodemodeClient.builder(target).plaintext().token(TOKEN).build();
    } catch (IllegalArgumentException refusal) {
      if (!expect.has("refused_contains")) {
        fail("plaintext client to " + target + " refused: " + refusal.getMessage());
      }
      if (!refusal.getMessage().contains(str(expect, "refused_contains"))) {
        fail("refusal " + quote(refusal.getMessage()) + " lacks " + quote(str(expect, "refused_contains")));
      }
      return;
    }
    client.close();
    if (expect.has("refused_contains")) {
      fail("a plaintext client with a token to " + target + " was allowed");
    }
  }

  private static Observed execute(CodemodeClient client, Session session, JsonObject spec) {
    String name = spec.has("session") ? str(spec, "session") : session.name();
    long giveUp = System.nanoTime() + RETRY_WHILE_BUSY.toNanos();
    while (true) {
      Duration deadline = STEP_DEADLINE;
      if (spec.has("call_deadline_seconds")) {
        deadline = Duration.ofMillis((long) (spec.get("call_deadline_seconds").getAsDouble() * 1000));
      }
      Session handle = client.withDeadline(deadline).session(name);
      Observed observed = executeOnce(handle, spec);
      boolean busy = observed.callError != null && observed.callError.reason().equals("SESSION_BUSY");
      boolean retry = spec.has("retry_while_busy") && spec.get("retry_while_busy").getAsBoolean();
      if (!(busy && retry && System.nanoTime() < giveUp)) {
        return observed;
      }
      try {
        Thread.sleep(100);
      } catch (InterruptedException e) {
        Thread.currentThread().interrupt();
        return observed;
      }
    }
  }

  private static Observed executeOnce(Session session, JsonObject spec) {
    Observed observed = new Observed();
    Duration timeout = null;
    if (spec.has("execution_timeout_seconds")) {
      timeout = Duration.ofMillis((long) (spec.get("execution_timeout_seconds").getAsDouble() * 1000));
    }
    boolean cancelOnOutput =
        spec.has("cancel_after_first_output") && spec.get("cancel_after_first_output").getAsBoolean();
    try (ExecutionStream events = session.stream(str(spec, "code"), new RunOptions(timeout, ""))) {
      while (events.hasNext()) {
        ExecuteResponse event = events.next();
        long now = System.nanoTime();
        switch (event.getEventCase()) {
          case OUTPUT -> {
            observed.outputs.add(event.getOutput());
            if (observed.firstOutputAt < 0) {
              observed.firstOutputAt = now;
            }
            if (cancelOnOutput && !observed.cancelled) {
              // The Java way: cancel the call's context; the stream then fails with CANCELLED.
              observed.cancelled = true;
              events.cancel();
            }
          }
          case RESULT -> {
            observed.result = event.getResult();
            observed.outputsBeforeResult = observed.outputs.size();
          }
          case ERROR -> observed.error = event.getError();
          case FINISHED -> {
            observed.finished = event.getFinished();
            observed.finishedAt = now;
          }
          default -> {}
        }
      }
    } catch (CodemodeException e) {
      observed.callError = e;
    }
    return observed;
  }

  private static void checkCallError(CodemodeException error, JsonObject expect) {
    if (!expect.has("error_status")) {
      fail("unexpected call failure: " + error.getMessage());
    }
    JsonObject wanted = expect.getAsJsonObject("error_status");
    if (!error.code().name().equals(str(wanted, "code"))) {
      fail("status " + error.code() + ", want " + str(wanted, "code") + " (" + error.getMessage() + ")");
    }
    if (wanted.has("reason") && !error.reason().equals(str(wanted, "reason"))) {
      fail("reason " + error.reason() + ", want " + str(wanted, "reason"));
    }
  }

  private static String streamName(OutputStream stream) {
    return stream == OutputStream.OUTPUT_STREAM_STDERR ? "stderr" : "stdout";
  }

  private static void checkExecute(Observed observed, JsonObject expect) {
    boolean wantCancelled = expect.has("cancelled") && expect.get("cancelled").getAsBoolean();
    if (observed.callError != null) {
      if (wantCancelled) {
        if (observed.callError.code() != Status.Code.CANCELLED) {
          fail("cancel ended with " + observed.callError.getMessage());
        }
        return;
      }
      checkCallError(observed.callError, expect);
      return;
    }
    if (expect.has("error_status")) {
      fail("expected " + expect.getAsJsonObject("error_status") + ", the call succeeded");
    }
    if (wantCancelled) {
      if (!observed.cancelled || observed.finished != null) {
        fail("the call was not cancelled");
      }
      return;
    }
    ExecutionFinished finished = observed.finished;
    if (finished == null) {
      fail("no finished event");
    }
    if (expect.has("status")) {
      String status = finished.getStatus().name().replaceFirst("^EXECUTION_STATUS_", "");
      if (!status.equals(str(expect, "status"))) {
        fail("status " + status + ", want " + str(expect, "status") + " (" + finished.getMessage() + ")");
      }
    }
    if (expect.has("value")) {
      if (observed.result == null || !observed.result.hasJson()) {
        fail("no JSON value (result " + observed.result + ")");
      }
      JsonElement got = JsonParser.parseString(observed.result.getJson());
      if (!jsonEquals(got, expect.get("value"))) {
        fail("value " + observed.result.getJson() + ", want " + expect.get("value"));
      }
    }
    if (expect.has("value_repr")
        && (observed.result == null || !observed.result.getRepr().equals(str(expect, "value_repr")))) {
      fail("repr of " + observed.result + ", want " + str(expect, "value_repr"));
    }
    if (expect.has("no_value") && expect.get("no_value").getAsBoolean() && observed.result != null) {
      fail("unexpected value " + observed.result);
    }
    String stdout = observed.text(OutputStream.OUTPUT_STREAM_STDOUT);
    String stderr = observed.text(OutputStream.OUTPUT_STREAM_STDERR);
    if (expect.has("stdout") && !stdout.equals(str(expect, "stdout"))) {
      fail("stdout " + quote(stdout) + ", want " + quote(str(expect, "stdout")));
    }
    if (expect.has("stderr") && !stderr.equals(str(expect, "stderr"))) {
      fail("stderr " + quote(stderr) + ", want " + quote(str(expect, "stderr")));
    }
    if (expect.has("stdout_ends_with") && !stdout.endsWith(str(expect, "stdout_ends_with"))) {
      fail("stdout does not end with " + quote(str(expect, "stdout_ends_with")));
    }
    if (expect.has("output_order")) {
      List<String> order = new ArrayList<>();
      for (ExecutionOutput output : observed.outputs) {
        String name = streamName(output.getStream());
        if (order.isEmpty() || !order.get(order.size() - 1).equals(name)) {
          order.add(name);
        }
      }
      List<String> wanted = new ArrayList<>();
      expect.getAsJsonArray("output_order").forEach(e -> wanted.add(e.getAsString()));
      if (!order.equals(wanted)) {
        fail("output order " + order + ", want " + wanted);
      }
    }
    if (expect.has("first_output_before_finished_seconds")) {
      if (observed.firstOutputAt < 0 || observed.finishedAt < 0) {
        fail("no output or no finished event");
      }
      double gap = (observed.finishedAt - observed.firstOutputAt) / 1e9;
      if (gap < expect.get("first_output_before_finished_seconds").getAsDouble()) {
        fail(String.format("first output only %.3fs before finished", gap));
      }
    }
    if (expect.has("outputs_before_result_at_least")) {
      if (observed.outputsBeforeResult < 0) {
        fail("no result event");
      }
      if (observed.outputsBeforeResult < expect.get("outputs_before_result_at_least").getAsInt()) {
        fail("only " + observed.outputsBeforeResult + " output events before the result");
      }
    }
    if (expect.has("error")) {
      JsonObject wanted = expect.getAsJsonObject("error");
      ExecutionError error = observed.error;
      if (error == null) {
        fail("no error event");
      }
      if (!error.getType().equals(str(wanted, "type"))) {
        fail("error type " + error.getType() + ", want " + str(wanted, "type"));
      }
      if (wanted.has("message_contains") && !error.getMessage().contains(str(wanted, "message_contains"))) {
        fail("error message " + quote(error.getMessage()));
      }
      if (wanted.has("traceback_contains")) {
        for (JsonElement fragment : wanted.getAsJsonArray("traceback_contains")) {
          if (!error.getTraceback().contains(fragment.getAsString())) {
            fail("traceback lacks " + fragment + ": " + error.getTraceback());
          }
        }
      }
    }
    if (expect.has("truncated")) {
      JsonObject truncated = expect.getAsJsonObject("truncated");
      String stream = str(truncated, "stream");
      long total = truncated.get("total_bytes").getAsLong();
      boolean isStderr = stream.equals("stderr");
      long written = isStderr ? finished.getStderrBytes() : finished.getStdoutBytes();
      long dropped = isStderr ? finished.getStderrTruncatedBytes() : finished.getStdoutTruncatedBytes();
      long received = 0;
      long reported = 0;
      for (ExecutionOutput output : observed.outputs) {
        if (streamName(output.getStream()).equals(stream)) {
          received += output.getData().size();
          reported += output.getDroppedBytesBefore();
        }
      }
      if (written != total) {
        fail(stream + "_bytes " + written + ", want " + total);
      }
      if (dropped == 0) {
        fail("nothing reported as truncated");
      }
      if (received + dropped != total) {
        fail("received " + received + " + truncated " + dropped + " != " + total);
      }
      if (reported != dropped) {
        fail("dropped_bytes_before adds up to " + reported + ", finished says " + dropped);
      }
    }
  }

  /** JSON equality where numbers compare by value, so 2 and 2.0 match as in the other runners. */
  private static boolean jsonEquals(JsonElement a, JsonElement b) {
    if (a.isJsonPrimitive() && b.isJsonPrimitive()
        && a.getAsJsonPrimitive().isNumber() && b.getAsJsonPrimitive().isNumber()) {
      return a.getAsBigDecimal().compareTo(b.getAsBigDecimal()) == 0;
    }
    if (a.isJsonArray() && b.isJsonArray()) {
      JsonArray x = a.getAsJsonArray();
      JsonArray y = b.getAsJsonArray();
      if (x.size() != y.size()) {
        return false;
      }
      for (int i = 0; i < x.size(); i++) {
        if (!jsonEquals(x.get(i), y.get(i))) {
          return false;
        }
      }
      return true;
    }
    if (a.isJsonObject() && b.isJsonObject()) {
      JsonObject x = a.getAsJsonObject();
      JsonObject y = b.getAsJsonObject();
      if (!x.keySet().equals(y.keySet())) {
        return false;
      }
      for (String key : x.keySet()) {
        if (!jsonEquals(x.get(key), y.get(key))) {
          return false;
        }
      }
      return true;
    }
    return a.equals(b);
  }

  private static String str(JsonObject object, String key) {
    return object.has(key) ? object.get(key).getAsString() : "";
  }

  private static String quote(String s) {
    return '"' + s.replace("\n", "\\n") + '"';
  }
}
