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
      List.of(
          "list_dependencies", "add_dependency", "get_session", "delete_session", "list_sessions",
          "attach_execution", "cancel_execution");
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
    /** The name from the started event, and every non-heartbeat event in order. */
    String execution = "";
    final List<Signed> events = new ArrayList<>();
    /** What attach_after_outputs read, after attachedAfter. */
    final List<Signed> attached = new ArrayList<>();
    long attachedAfter;
    /** A failed CancelExecution or AttachExecution made mid-stream. */
    CodemodeException sideError;

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

  /** One non-heartbeat event as the cases compare it (conformance/README.md, "Event signatures"). */
  private record Signed(long sequence, String signature) {
    static Signed of(ExecuteResponse event) {
      String signature =
          switch (event.getEventCase()) {
            case STARTED -> "started " + event.getStarted().getExecution();
            case OUTPUT ->
                "output " + streamName(event.getOutput().getStream()) + " "
                    + event.getOutput().getData().toString(StandardCharsets.ISO_8859_1);
            case RESULT -> "result " + quote(event.getResult().getJson()) + " " + quote(event.getResult().getRepr());
            case ERROR -> "error " + event.getError().getType() + " " + event.getError().getMessage();
            case FINISHED -> "finished " + event.getFinished().getStatus();
            default -> "unknown " + event.getEventCase();
          };
      return new Signed(event.getSequence(), signature);
    }
  }

  /** What a case's later steps need from earlier ones (conformance/README.md, "The last execution"). */
  private static final class CaseState {
    Session session;
    String lastExecution = "";
    List<Signed> lastEvents = List.of();
  }

  /** A cases.json session spec as a SessionConfig: absent keys stay unset, present ones are sent even when false. */
  private static SessionConfig sessionConfig(JsonObject wanted) {
    SessionConfig.Builder config = SessionConfig.newBuilder();
    if (wanted == null) {
      return config.build();
    }
    if (wanted.has("output_budget_bytes")) {
      config.setOutputBudgetBytes(wanted.get("output_budget_bytes").getAsLong());
    }
    if (wanted.has("deps")) {
      wanted.getAsJsonArray("deps").forEach(dep -> config.addDeps(dep.getAsString()));
    }
    if (wanted.has("allow_runtime_deps")) {
      config.setAllowRuntimeDeps(wanted.get("allow_runtime_deps").getAsBoolean());
    }
    if (wanted.has("sync_deps_on_start")) {
      config.setSyncDepsOnStart(wanted.get("sync_deps_on_start").getAsBoolean());
    }
    return config.build();
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
        client.skills("").search("probe", 1, "");
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
    SessionConfig config = sessionConfig(c.has("session") ? c.getAsJsonObject("session") : null);
    // try-with-resources deletes the session however the case ends; createSession waits until READY.
    try (Session session = needsSession ? client.createSession(config) : null) {
      CaseState state = new CaseState();
      state.session = session;
      for (int i = 0; i < steps.size(); i++) {
        JsonObject step = steps.get(i).getAsJsonObject();
        try {
          runStep(clients, state, step);
        } catch (AssertionError e) {
          throw new AssertionError(
              "step " + (i + 1) + " (" + step.keySet().iterator().next() + "): " + e.getMessage(), e);
        }
      }
    }
  }

  private static void runStep(Map<String, CodemodeClient> clients, CaseState state, JsonObject step) {
    Session session = state.session;
    JsonObject expect = step.has("expect") ? step.getAsJsonObject("expect") : new JsonObject();
    CodemodeClient base = clients.get(step.has("auth") ? str(step, "auth") : "principal");
    String tenant = str(step, "tenant");
    if (step.has("execute")) {
      Observed observed = execute(base, session, step.getAsJsonObject("execute"));
      try {
        checkExecute(observed, expect, state, 0);
      } finally {
        if (!observed.execution.isEmpty()) {
          state.lastExecution = observed.execution;
          state.lastEvents = List.copyOf(observed.events);
        }
      }
      return;
    }
    if (step.has("attach_execution")) {
      JsonObject spec = step.getAsJsonObject("attach_execution");
      String name =
          spec.has("execution_id") ? session.name() + "/executions/" + str(spec, "execution_id") : state.lastExecution;
      long after = spec.has("after_sequence") ? spec.get("after_sequence").getAsLong() : 0;
      CodemodeClient client = base.withDeadline(STEP_DEADLINE);
      Observed observed = new Observed();
      // The Java way to attach: the same ExecutionStream as Session.stream, closed by try-with-resources.
      try (ExecutionStream events = client.attachExecution(name, after)) {
        observe(client, events, new JsonObject(), observed);
      } catch (CodemodeException e) {
        observed.callError = e;
      }
      checkExecute(observed, expect, state, after);
      return;
    }
    if (step.has("cancel_execution")) {
      try {
        boolean cancelled = base.withDeadline(STEP_DEADLINE).cancelExecution(state.lastExecution);
        noErrorExpected(expect);
        if (expect.has("execution_cancelled") && cancelled != expect.get("execution_cancelled").getAsBoolean()) {
          fail("cancelled " + cancelled + ", want " + expect.get("execution_cancelled"));
        }
      } catch (CodemodeException e) {
        checkCallError(e, expect);
      }
      return;
    }
    if (step.has("create_session")) {
      try (Session created = base.withDeadline(STEP_DEADLINE).createSession(sessionConfig(step.getAsJsonObject("create_session")))) {
        noErrorExpected(expect);
        if (created.info().getState() != dev.codemode.v1.Session.State.STATE_READY) {
          fail("createSession returned a " + created.info().getState() + " session");
        }
      } catch (CodemodeException e) {
        checkCallError(e, expect);
      }
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
        skills.search(str(step.getAsJsonObject("search_skills"), "query"), 0, "")
            .getResultsList()
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
        String sessionState = info.getState().name().replaceFirst("^STATE_", "");
        if (expect.has("session_state") && !sessionState.equals(str(expect, "session_state"))) {
          fail("session state " + sessionState + ", want " + str(expect, "session_state") + " (" + info.getStateMessage() + ")");
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
      Observed observed = executeOnce(client.withDeadline(deadline), handle, spec);
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

  private static Observed executeOnce(CodemodeClient client, Session session, JsonObject spec) {
    Observed observed = new Observed();
    Duration timeout = null;
    if (spec.has("execution_timeout_seconds")) {
      timeout = Duration.ofMillis((long) (spec.get("execution_timeout_seconds").getAsDouble() * 1000));
    }
    RunOptions options = new RunOptions(timeout, str(spec, "request_id"));
    try (ExecutionStream events = session.stream(str(spec, "code"), options)) {
      observe(client, events, spec, observed);
    } catch (CodemodeException e) {
      observed.callError = e;
    }
    return observed;
  }

  /** Reads an execution stream (Execute or AttachExecution) to its end; {@code spec} says what to do mid-stream. */
  private static void observe(CodemodeClient client, ExecutionStream events, JsonObject spec, Observed observed) {
    boolean cancelOnOutput = flag(spec, "cancel_after_first_output");
    boolean cancelExecutionOnOutput = flag(spec, "cancel_execution_after_first_output");
    int attachAfter = spec.has("attach_after_outputs") ? spec.get("attach_after_outputs").getAsInt() : 0;
    long lastSequence = 0;
    while (events.hasNext()) {
      ExecuteResponse event = events.next();
      long now = System.nanoTime();
      // Any event, a heartbeat too, carries the sequence to resume after.
      lastSequence = event.getSequence();
      if (event.getEventCase() != ExecuteResponse.EventCase.HEARTBEAT) {
        observed.events.add(Signed.of(event));
      }
      switch (event.getEventCase()) {
        case STARTED -> observed.execution = event.getStarted().getExecution();
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
          if (cancelExecutionOnOutput && observed.outputs.size() == 1) {
            try {
              client.cancelExecution(observed.execution);
            } catch (CodemodeException e) {
              observed.sideError = e;
            }
          }
          if (attachAfter > 0 && observed.outputs.size() == attachAfter) {
            // A second stream on the same execution while this one stays open.
            observed.attachedAfter = lastSequence;
            try (ExecutionStream attached = client.attachExecution(observed.execution, lastSequence)) {
              while (attached.hasNext()) {
                ExecuteResponse next = attached.next();
                if (next.getEventCase() != ExecuteResponse.EventCase.HEARTBEAT) {
                  observed.attached.add(Signed.of(next));
                }
              }
            } catch (CodemodeException e) {
              observed.sideError = e;
            }
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
  }

  private static boolean flag(JsonObject object, String key) {
    return object.has(key) && object.get(key).getAsBoolean();
  }

  /** Sequences after+1, after+2, ... with no gap or repeat. */
  private static void checkContiguous(List<Signed> events, long after, String what) {
    for (int i = 0; i < events.size(); i++) {
      if (events.get(i).sequence() != after + i + 1) {
        fail(what + ": event " + i + " has sequence " + events.get(i).sequence() + ", want " + (after + i + 1) + " " + events);
      }
    }
  }

  /** {@code got} has the signatures of {@code want}'s events above {@code after}. */
  private static void checkSameEvents(List<Signed> got, List<Signed> want, long after, String what) {
    List<Signed> tail = want.stream().filter(event -> event.sequence() > after).toList();
    if (!got.equals(tail)) {
      fail(what + ": events " + got + ", want " + tail);
    }
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
    // The client's typed accessors, not the raw status: RetryInfo and BadRequest as it decodes them.
    if (wanted.has("retry_delay_seconds")) {
      Duration want = Duration.ofNanos(Math.round(wanted.get("retry_delay_seconds").getAsDouble() * 1e9));
      Duration got = error.retryDelay().orElse(null);
      if (got == null) {
        fail("no retry delay (RetryInfo) in " + error.getMessage());
      }
      if (!got.equals(want)) {
        fail("retry delay " + got + ", want " + want);
      }
    }
    if (wanted.has("field_violation")) {
      List<String> fields = error.fieldViolations().stream().map(violation -> violation.getField()).toList();
      if (!fields.contains(str(wanted, "field_violation"))) {
        fail("field violations " + fields + " lack " + str(wanted, "field_violation"));
      }
    }
  }

  private static String streamName(OutputStream stream) {
    return stream == OutputStream.OUTPUT_STREAM_STDERR ? "stderr" : "stdout";
  }

  private static void checkExecute(Observed observed, JsonObject expect, CaseState state, long after) {
    if (observed.sideError != null) {
      fail("mid-stream call failed: " + observed.sideError.getMessage());
    }
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
    if (flag(expect, "contiguous_sequences")) {
      checkContiguous(observed.events, after, "stream");
    }
    if (flag(expect, "same_events_as_last_execution")) {
      if (state.lastExecution.isEmpty()) {
        fail("no earlier execution to compare with");
      }
      checkSameEvents(observed.events, state.lastEvents, after, "stream");
    }
    if (flag(expect, "attach_matches_stream")) {
      if (observed.attached.isEmpty()) {
        fail("the attached stream had no events");
      }
      checkContiguous(observed.attached, observed.attachedAfter, "attached stream");
      checkSameEvents(observed.attached, observed.events, observed.attachedAfter, "attached stream");
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
