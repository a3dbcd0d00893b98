"""The Helm chart (deploy/helm/codemode) rendered, schema-checked, and run for real.

Run by scripts/checks/70-helm.sh after `helm lint` (HELM names the binary). Offline:

1. `helm template` with the default values and each ci/*-values.yaml; values the schema
   must refuse (an unknown sandbox kind, a chart-managed flag in settings, an operator
   with a tenant, no Redis at all) must make `helm template` fail.
2. Every rendered manifest against the Kubernetes JSON schemas bundled in the PyPI package
   kubernetes-validate, strict (unknown fields are errors, required ones must be there),
   for the chart's minimum Kubernetes (1.33) and the newest bundled (1.37): its kind and
   apiVersion must exist there.
3. What the schemas cannot know: every CODEMODE_* variable is a real server option
   (server/config.py) and the rendered settings pass the server's own validation; probes
   are grpc on the health port the server is told to serve, liveness on "" and
   readiness on the chosen service; selectors match the pods; every Secret and ConfigMap
   a pod uses is rendered or named as an existing one in the values; the rendered
   principals file and sandbox CA load with the server's own loaders; with the shared session
   registry (sessionRegistry redis) the pod advertises $(POD_IP) (defined before it) on the
   `internal` port, names itself by the pod name, loads a CA, and the NetworkPolicy admits
   the internal port from the release's server pods only.
4. The default rendering started for real, without Kubernetes: the rendered redis.conf
   runs a real redis-server, and `codemode serve` gets nothing but the rendered
   environment and the rendered Secret files (addresses moved to loopback, paths into a
   temp dir, the downward API's pod IP as 127.0.0.1), as root bounded to exactly the capabilities the chart's securityContext adds
   (`setpriv --bounding-set`). The kubelet's probe (plaintext Check of "readiness" on the
   health port) answers SERVING; a client trusting the chart-generated CA, naming the
   Service's DNS name and holding the generated operator token, creates a session, runs
   code, stores a skill (which lands in Redis under the rendered prefix) and deletes the
   session, after which none of its sandbox's processes may be left. The default is the
   shared session registry: the internal listener must come up (an mTLS handshake with an
   instance certificate from the chart-generated CA) and the session must be registered in
   Redis.

Any failure prints what and where, and the script exits 1.
"""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from typing import Any

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path[:0] = [REPO, os.path.join(REPO, "clients", "python", "src")]

import grpc  # noqa: E402
import kubernetes_validate  # noqa: E402
import redis  # noqa: E402
import yaml  # noqa: E402
from grpc_health.v1 import health_pb2, health_pb2_grpc  # noqa: E402

from codemode_protos.v1 import (  # noqa: E402
    execute_pb2,
    execute_pb2_grpc,
    session_pb2,
    session_pb2_grpc,
    skill_pb2,
    skill_pb2_grpc,
)
from server.config import _OPTIONS, ConfigError, parse_config  # noqa: E402
from server.identity import principals as principals_file  # noqa: E402
from server.pki import CertificateAuthority  # noqa: E402
from tests.helpers.sessions import create_ready_session_sync  # noqa: E402

CHART = os.path.join(REPO, "deploy", "helm", "codemode")
HELM = os.environ.get("HELM", "helm")
RELEASE, NAMESPACE = "rel", "codemode"
KUBE_VERSIONS = ("1.33", "1.37")  # the chart's kubeVersion floor, and the newest schemas bundled
OPTION_ENVS = {option.env for option in _OPTIONS}
SKILL = '"""Adds one."""\n\nasync def run(x: int = 0) -> int:\n    return x + 1\n'


class CheckFailed(Exception):
    pass


def fail(scenario: str, message: str) -> None:
    raise CheckFailed(f"[{scenario}] {message}")


def helm_template(args: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([HELM, "template", RELEASE, CHART, "--namespace", NAMESPACE, "--kube-version", "1.33.0", *args],
                          capture_output=True, text=True, timeout=120, check=False)


def render(scenario: str, args: list[str]) -> list[dict[str, Any]]:
    result = helm_template(args)
    if result.returncode != 0:
        fail(scenario, f"helm template failed:\n{result.stderr}")
    docs = [doc for doc in yaml.safe_load_all(result.stdout) if doc]
    if not docs:
        fail(scenario, "helm template rendered nothing")
    return docs


def by_kind(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [doc for doc in docs if doc["kind"] == kind]


def one(docs: list[dict[str, Any]], kind: str, scenario: str) -> dict[str, Any]:
    found = by_kind(docs, kind)
    if len(found) != 1:
        fail(scenario, f"expected one {kind}, rendered {len(found)}")
    return found[0]


# --- 2. schemas -----------------------------------------------------------------------------------------------

def check_schemas(scenario: str, docs: list[dict[str, Any]]) -> None:
    for doc in docs:
        for version in KUBE_VERSIONS:
            name = f"{doc.get('kind')}/{doc.get('metadata', {}).get('name')}"
            try:
                kubernetes_validate.validate(doc, version, strict=True)
            except kubernetes_validate.SchemaNotFoundError:
                fail(scenario, f"{name}: Kubernetes {version} has no {doc.get('apiVersion')} {doc.get('kind')}")
            except kubernetes_validate.ValidationError as exc:
                fail(scenario, f"{name} is not a valid {doc.get('kind')} for Kubernetes {version}:\n{exc}")


# --- 3. what the schemas cannot know ----------------------------------------------------------------------

def secret_data(docs: list[dict[str, Any]], name: str) -> dict[str, bytes] | None:
    for secret in by_kind(docs, "Secret"):
        if secret["metadata"]["name"] == name:
            return {key: base64.b64decode(value) for key, value in secret.get("data", {}).items()}
    return None


def check_semantics(scenario: str, docs: list[dict[str, Any]], values: dict[str, Any], existing: set[str]) -> None:
    config_map = one(docs, "ConfigMap", scenario)
    deployment = one(docs, "Deployment", scenario)
    pod = deployment["spec"]["template"]
    pod_labels = pod["metadata"]["labels"]
    (container,) = pod["spec"]["containers"]

    env_names = set(config_map["data"]) | {e["name"] for e in container.get("env", []) if e["name"].startswith("CODEMODE_")}
    unknown = sorted(env_names - OPTION_ENVS)
    if unknown:
        fail(scenario, f"variables the server does not read (server/config.py _OPTIONS): {unknown}")

    image = container["image"]
    app_version = yaml.safe_load(open(os.path.join(CHART, "Chart.yaml")))["appVersion"]
    if image != f"codemode-server:{app_version}":
        fail(scenario, f"image {image!r}, expected codemode-server:{app_version}")

    health_port = int(config_map["data"]["CODEMODE_HEALTH_LISTEN"].rsplit(":", 1)[1])
    for probe_name in ("startupProbe", "livenessProbe", "readinessProbe"):
        probe = container.get(probe_name, {})
        if set(probe) & {"httpGet", "tcpSocket", "exec"} or probe.get("grpc", {}).get("port") != health_port:
            fail(scenario, f"{probe_name} must be a grpc probe on the health port {health_port}: {probe}")
    if container["livenessProbe"]["grpc"].get("service", "") != "":
        fail(scenario, "liveness must ask for the service \"\" (only shutdown makes it NOT_SERVING)")
    wanted = values.get("probes", {}).get("readiness", {}).get("service", "readiness")
    if container["readinessProbe"]["grpc"].get("service") != wanted:
        fail(scenario, f"readiness asks for {container['readinessProbe']['grpc'].get('service')!r}, not {wanted!r}")

    for workload in [deployment, *by_kind(docs, "StatefulSet")]:
        for each in workload["spec"]["template"]["spec"]["containers"]:
            context = each.get("securityContext", {})
            if context.get("readOnlyRootFilesystem") is not True or "ALL" not in context.get("capabilities", {}).get("drop", []):
                fail(scenario, f"{workload['metadata']['name']}/{each['name']}: read-only root and dropped capabilities expected")
            if not each.get("resources", {}).get("requests") or not each["resources"].get("limits", {}).get("memory"):
                fail(scenario, f"{workload['metadata']['name']}/{each['name']}: requests and a memory limit expected")

    def selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
        return bool(selector) and all(labels.get(key) == value for key, value in selector.items())

    if deployment["spec"]["selector"]["matchLabels"] != {k: pod_labels[k] for k in deployment["spec"]["selector"]["matchLabels"]}:
        fail(scenario, "the Deployment's selector does not match its pods")
    server_service = [s for s in by_kind(docs, "Service") if s["metadata"]["name"] == deployment["metadata"]["name"]]
    if not server_service or not selects(server_service[0]["spec"]["selector"], pod_labels):
        fail(scenario, "the Service does not select the server pods")
    for pdb in by_kind(docs, "PodDisruptionBudget"):
        if not selects(pdb["spec"]["selector"]["matchLabels"], pod_labels):
            fail(scenario, "the PodDisruptionBudget does not select the server pods")
    for hpa in by_kind(docs, "HorizontalPodAutoscaler"):
        target = hpa["spec"]["scaleTargetRef"]
        if (target["kind"], target["name"]) != ("Deployment", deployment["metadata"]["name"]) or "replicas" in deployment["spec"]:
            fail(scenario, "the HPA must target the Deployment, which then sets no replicas")
    policies = {p["metadata"]["name"]: p for p in by_kind(docs, "NetworkPolicy")}
    if values.get("networkPolicy", {}).get("enabled", True):
        server_policy = policies.get(deployment["metadata"]["name"])
        if server_policy is None or not selects(server_policy["spec"]["podSelector"]["matchLabels"], pod_labels):
            fail(scenario, "no NetworkPolicy selects the server pods")
        port_names = {p["name"] for p in container["ports"]}
        for rule in server_policy["spec"]["ingress"]:
            for port in rule["ports"]:
                if isinstance(port["port"], str) and port["port"] not in port_names:
                    fail(scenario, f"the NetworkPolicy names port {port['port']!r}, which the container lacks")
            if any(port["port"] == "health" for port in rule["ports"]):
                fail(scenario, "nothing but the kubelet (always admitted) should reach the health port")
        for statefulset in by_kind(docs, "StatefulSet"):
            redis_labels = statefulset["spec"]["template"]["metadata"]["labels"]
            guarded = [p for p in policies.values() if selects(p["spec"]["podSelector"]["matchLabels"], redis_labels)]
            if not guarded or guarded[0]["spec"].get("egress") != []:
                fail(scenario, "Redis needs a NetworkPolicy admitting the server only and denying egress")

    rendered_secrets = {s["metadata"]["name"] for s in by_kind(docs, "Secret")}
    rendered_maps = {c["metadata"]["name"] for c in by_kind(docs, "ConfigMap")}
    for workload in [deployment, *by_kind(docs, "StatefulSet")]:
        spec = workload["spec"]["template"]["spec"]
        used: list[tuple[str, str, str | None]] = []
        for volume in spec.get("volumes", []):
            if "secret" in volume:
                for item in volume["secret"].get("items", [{"key": None}]):
                    used.append(("Secret", volume["secret"]["secretName"], item["key"]))
        for each in spec["containers"]:
            for source in each.get("envFrom") or []:
                if "configMapRef" in source:
                    used.append(("ConfigMap", source["configMapRef"]["name"], None))
            for env in each.get("env") or []:
                ref = env.get("valueFrom", {}).get("secretKeyRef")
                if ref:
                    used.append(("Secret", ref["name"], ref["key"]))
        for kind, name, key in used:
            if name in existing:
                continue
            if kind == "ConfigMap" and name not in rendered_maps or kind == "Secret" and name not in rendered_secrets:
                fail(scenario, f"{workload['metadata']['name']} uses {kind} {name}, which is neither rendered nor an existing one")
            if kind == "Secret" and key is not None and key not in (secret_data(docs, name) or {}):
                fail(scenario, f"{workload['metadata']['name']} uses key {key!r} of Secret {name}, which it lacks")

    check_registry(scenario, config_map, container, pod_labels, policies, values)

    # The server's own validation of the rendered settings (files it reads at parse time materialized).
    with tempfile.TemporaryDirectory(prefix="cmh-") as root:
        env = server_env(docs, root)
        try:
            parse_config([], env)
        except ConfigError as exc:
            fail(scenario, f"the server refuses the rendered settings: {exc}")

    fullname = deployment["metadata"]["name"]
    data = secret_data(docs, fullname) or {}
    if "principals.json" in data:
        with tempfile.TemporaryDirectory(prefix="cmh-") as root:
            path = os.path.join(root, "principals.json")
            open(path, "wb").write(data["principals.json"])
            loaded = principals_file.load(path)
        want = [p["id"] for p in values["auth"]["principals"]]
        if [p.id for p in loaded.principals] != want:
            fail(scenario, f"the rendered principals file holds {[p.id for p in loaded.principals]}, not {want}")
    if "sandbox-ca.crt" in data:
        leaf = CertificateAuthority.load(data["sandbox-ca.crt"], data["sandbox-ca.key"]).issue_server_cert(["probe"])
        # What every TLS peer (agents, other replicas) does with the server's certificates.
        with tempfile.TemporaryDirectory(prefix="cmh-") as root:
            for name, pem in (("ca.crt", data["sandbox-ca.crt"]), ("leaf.crt", leaf.cert_pem)):
                with open(os.path.join(root, name), "wb") as handle:
                    handle.write(pem)
            verify = subprocess.run(["openssl", "verify", "-CAfile", f"{root}/ca.crt", f"{root}/leaf.crt"],
                                    capture_output=True, text=True, check=False)
        if verify.returncode != 0:
            fail(scenario, "a certificate the server issues from the rendered sandbox CA does not verify against it "
                           f"(openssl verify: {(verify.stdout + verify.stderr).strip()})")


def check_registry(scenario: str, config_map: dict[str, Any], container: dict[str, Any], pod_labels: dict[str, str],
                   policies: dict[str, dict[str, Any]], values: dict[str, Any]) -> None:
    """sessionRegistry: redis (the default) shares sessions; local keeps them in the pod."""
    data = config_map["data"]
    registry = values.get("sessionRegistry", "redis")
    if data.get("CODEMODE_SESSION_REGISTRY") != registry:
        fail(scenario, f"CODEMODE_SESSION_REGISTRY is {data.get('CODEMODE_SESSION_REGISTRY')!r}, not {registry!r}")
    env = container.get("env", [])
    names = [e["name"] for e in env]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    if registry == "local":
        if "internal" in ports or {"CODEMODE_INTERNAL_LISTEN", "CODEMODE_INTERNAL_ADVERTISE"} & (set(data) | set(names)):
            fail(scenario, "sessionRegistry local renders the internal listener")
        return
    internal = values.get("server", {}).get("internalPort", 50053)
    if ports.get("internal") != internal:
        fail(scenario, f"no containerPort `internal` {internal}: {ports}")
    if data.get("CODEMODE_INTERNAL_LISTEN", "").rsplit(":", 1)[-1] != str(internal):
        fail(scenario, f"CODEMODE_INTERNAL_LISTEN {data.get('CODEMODE_INTERNAL_LISTEN')!r} is not on port {internal}")
    if not (data.get("CODEMODE_CA_CERT") and data.get("CODEMODE_CA_KEY")):
        fail(scenario, "the shared session registry needs --ca-cert/--ca-key: no CA is mounted")
    by_name = {e["name"]: e for e in env}
    field = {n: e.get("valueFrom", {}).get("fieldRef", {}).get("fieldPath") for n, e in by_name.items()}
    if field.get("POD_IP") != "status.podIP" or field.get("CODEMODE_INSTANCE_ID") != "metadata.name":
        fail(scenario, "POD_IP must come from status.podIP and CODEMODE_INSTANCE_ID from metadata.name")
    advertise = by_name.get("CODEMODE_INTERNAL_ADVERTISE", {}).get("value", "")
    if "$(POD_IP)" not in advertise or not advertise.endswith(f":{internal}"):
        fail(scenario, f"CODEMODE_INTERNAL_ADVERTISE {advertise!r} is not $(POD_IP):{internal}")
    if names.index("POD_IP") > names.index("CODEMODE_INTERNAL_ADVERTISE"):
        fail(scenario, "POD_IP must be defined before CODEMODE_INTERNAL_ADVERTISE, which refers to it")
    if values.get("networkPolicy", {}).get("enabled", True):
        policy = next(p for p in policies.values() if p["spec"]["podSelector"]["matchLabels"] == pod_labels)
        rules = [r for r in policy["spec"]["ingress"] if any(port["port"] in ("internal", internal) for port in r["ports"])]
        if len(rules) != 1 or [f.get("podSelector", {}).get("matchLabels") for f in rules[0].get("from", [])] != [pod_labels]:
            fail(scenario, f"the internal port must be admitted from this release's server pods only: {rules}")
        out = [r for r in policy["spec"]["egress"] if any(port["port"] == internal for port in r.get("ports", []))]
        if not out or [t.get("podSelector", {}).get("matchLabels") for t in out[0].get("to", [])] != [pod_labels]:
            fail(scenario, "the server pods must be allowed out to each other's internal port (and nowhere else by it)")


POD_IP = "127.0.0.1"  # the downward API's status.podIP, for a run without Kubernetes


def pod_name(docs: list[dict[str, Any]]) -> str:
    """A pod name as a Deployment makes them: <name>-<replicaset hash>-<5 characters>."""
    return f"{one(docs, 'Deployment', 'env')['metadata']['name']}-5d8f7c9b4-x2x4z"


def server_env(docs: list[dict[str, Any]], root: str) -> dict[str, str]:
    """The rendered pod environment, its Secret volumes written under `root` and every
    path moved there; Secrets the chart does not render (existing ones) are left out."""
    deployment = one(docs, "Deployment", "env")
    spec = deployment["spec"]["template"]["spec"]
    (container,) = spec["containers"]
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    for volume in spec["volumes"]:
        target = root + mounts[volume["name"]]
        os.makedirs(target, exist_ok=True)
        if "secret" in volume:
            data = secret_data(docs, volume["secret"]["secretName"]) or {}
            for item in volume["secret"].get("items", []):
                if item["key"] in data:
                    with open(os.path.join(target, item["path"]), "wb") as handle:
                        handle.write(data[item["key"]])
    env = dict(one(docs, "ConfigMap", "env")["data"])
    fields = {"status.podIP": POD_IP, "metadata.name": pod_name(docs)}
    for entry in container.get("env", []):
        ref = entry.get("valueFrom", {}).get("secretKeyRef")
        field = entry.get("valueFrom", {}).get("fieldRef", {}).get("fieldPath")
        if ref:
            value = (secret_data(docs, ref["name"]) or {}).get(ref["key"])
            if value is not None:
                env[entry["name"]] = value.decode()
        elif field:
            if field not in fields:
                raise CheckFailed(f"[env] {entry['name']}: no local value for the downward API's {field}")
            env[entry["name"]] = fields[field]
        elif "value" in entry:
            # $(NAME) expands to a variable defined before it, as the kubelet does.
            env[entry["name"]] = re.sub(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)",
                                        lambda m: env.get(m.group(1), m.group(0)), entry["value"])
    for name, value in env.items():
        if value.startswith(("/etc/codemode", "/var/lib/codemode")):
            env[name] = root + value
    return env


# --- 4. the default rendering, running ----------------------------------------------------------------

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(what: str, check: Any, timeout: float) -> Any:
    deadline = time.monotonic() + timeout
    last: object = None
    while time.monotonic() < deadline:
        try:
            result = check()
            if result:
                return result
        except Exception as exc:  # noqa: BLE001 - retried until the deadline, then reported
            last = exc
        time.sleep(0.1)
    raise CheckFailed(f"[run] timed out waiting for {what} (last error: {last})")


def sandbox_processes(first: int, last: int) -> list[int]:
    """Pids whose real uid is in the sandbox uid range (only this check's server uses it)."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/status") as handle:
                    uid = next(int(line.split()[1]) for line in handle if line.startswith("Uid:"))
            except (OSError, StopIteration):
                continue
            if first <= uid <= last:
                found.append(int(entry))
    return found


def run_default(docs: list[dict[str, Any]]) -> None:
    fullname = f"{RELEASE}-codemode"
    root = tempfile.mkdtemp(prefix="cmh-")
    processes: list[subprocess.Popen[bytes]] = []
    try:
        # Redis from the rendered redis.conf: only where it listens and keeps its files moves.
        redis_secret = secret_data(docs, f"{fullname}-redis")
        if redis_secret is None:
            raise CheckFailed("[run] the default values render no Redis Secret")
        redis_port = free_port()
        conf = []
        for line in redis_secret["redis.conf"].decode().splitlines():
            key = line.split(" ", 1)[0]
            conf.append({"port": f"port {redis_port}", "bind": "bind 127.0.0.1", "dir": f"dir {root}/redis"}.get(key, line))
        os.makedirs(f"{root}/redis")
        with open(f"{root}/redis.conf", "w") as handle:
            handle.write("\n".join(conf) + "\n")
        binary = shutil.which("redis-server")
        if binary is None:
            raise CheckFailed("[run] redis-server is missing (scripts/setup/10-redis.sh installs it)")
        processes.append(subprocess.Popen([binary, f"{root}/redis.conf"], stdout=subprocess.DEVNULL,
                                          stderr=subprocess.DEVNULL))
        password = redis_secret["password"].decode()
        direct = redis.Redis(host="127.0.0.1", port=redis_port, password=password)
        wait_for("redis-server", direct.ping, 20)
        if direct.config_get("appendonly")["appendonly"] != "yes" or direct.config_get("maxmemory-policy")["maxmemory-policy"] != "noeviction":
            raise CheckFailed("[run] the rendered redis.conf does not give AOF persistence and noeviction")
        try:
            redis.Redis(host="127.0.0.1", port=redis_port).ping()
            raise CheckFailed("[run] the rendered Redis answers without its password")
        except redis.AuthenticationError:
            pass

        env = server_env(docs, root)
        url = env["CODEMODE_REDIS_URL"]
        rendered_host = f"{fullname}-redis:6379"
        if rendered_host not in url or password not in url:
            raise CheckFailed(f"[run] the Redis URL does not name {rendered_host} with the password")
        env["CODEMODE_REDIS_URL"] = url.replace(rendered_host, f"127.0.0.1:{redis_port}")
        ports = {name: free_port() for name in ("CODEMODE_LISTEN", "CODEMODE_HEALTH_LISTEN", "CODEMODE_METRICS_LISTEN")}
        for name, port in ports.items():
            env[name] = f"127.0.0.1:{port}"
        shared = env.get("CODEMODE_SESSION_REGISTRY") == "redis"
        if shared:
            # The internal listener on loopback too; the advertised address is the pod IP
            # (POD_IP, here 127.0.0.1) on the same port, as the pod spec renders it.
            rendered_port = env["CODEMODE_INTERNAL_LISTEN"].rsplit(":", 1)[1]
            if env.get("CODEMODE_INTERNAL_ADVERTISE") != f"{POD_IP}:{rendered_port}":
                raise CheckFailed(f"[run] CODEMODE_INTERNAL_ADVERTISE is {env.get('CODEMODE_INTERNAL_ADVERTISE')!r} "
                                  f"with POD_IP={POD_IP}, not {POD_IP}:{rendered_port}")
            ports["CODEMODE_INTERNAL_LISTEN"] = free_port()
            env["CODEMODE_INTERNAL_LISTEN"] = f"127.0.0.1:{ports['CODEMODE_INTERNAL_LISTEN']}"
            env["CODEMODE_INTERNAL_ADVERTISE"] = f"{POD_IP}:{ports['CODEMODE_INTERNAL_LISTEN']}"
        # No warm pool, so after DeleteSession no sandbox of this server may run at all.
        env["CODEMODE_WARM_POOL_SIZE"] = "0"
        base = {k: v for k, v in os.environ.items() if not k.startswith("CODEMODE_")}
        base["PYTHONPATH"] = os.pathsep.join([REPO, os.path.join(REPO, "clients", "python", "src")])
        # The container's command, `codemode serve`, with no flags: the environment is everything;
        # as root, with no capabilities but the ones the chart's securityContext adds.
        deployment = one(docs, "Deployment", "run")
        (container,) = deployment["spec"]["template"]["spec"]["containers"]
        caps = [c.lower() for c in container["securityContext"]["capabilities"].get("add", [])]
        prefix = ["setpriv", "--bounding-set=" + ",".join(["-all", *(f"+{c}" for c in caps)]), "--inh-caps=-all", "--"]
        if os.geteuid() != 0:
            print("70-helm: not root: the server runs without the capability bound (CI runs as root)")
            prefix = []
        server = subprocess.Popen([*prefix, os.path.join(REPO, ".venv", "bin", "codemode"), "serve"], env={**base, **env},
                                  stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=open(f"{root}/server.log", "wb"),
                                  start_new_session=True)
        processes.append(server)
        assert server.stdout is not None
        line = server.stdout.readline()  # the ready line; the server exits (EOF) on a bad setting
        if not line.startswith(b"{"):
            raise CheckFailed(f"[run] `codemode serve` did not start:\n{open(f'{root}/server.log').read()[-3000:]}")
        ready = json.loads(line)
        if shared:
            if ready.get("instance_id") != env["CODEMODE_INSTANCE_ID"] or not ready.get("internal_address"):
                raise CheckFailed(f"[run] the ready line names no internal listener for instance "
                                  f"{env['CODEMODE_INSTANCE_ID']}: {ready}")
            # What another replica does: an mTLS handshake with an instance certificate from the
            # shared CA, checking the listener's certificate names this instance.
            ca = CertificateAuthority.load_files(env["CODEMODE_CA_CERT"], env["CODEMODE_CA_KEY"])
            peer = ca.issue_instance_cert("helm-check-peer")
            internal_credentials = grpc.ssl_channel_credentials(ca.cert_pem, peer.key_pem, peer.cert_pem)
            name = f"instance-{env['CODEMODE_INSTANCE_ID']}.codemode.internal"
            with grpc.secure_channel(env["CODEMODE_INTERNAL_ADVERTISE"], internal_credentials,
                                     options=[("grpc.ssl_target_name_override", name)]) as channel:
                try:
                    grpc.channel_ready_future(channel).result(timeout=20)
                except grpc.FutureTimeoutError:
                    raise CheckFailed(f"[run] no mTLS connection to the internal listener "
                                      f"{env['CODEMODE_INTERNAL_ADVERTISE']} as {name}") from None

        health_address = f"127.0.0.1:{ports['CODEMODE_HEALTH_LISTEN']}"
        with grpc.insecure_channel(health_address) as channel:  # what the kubelet's grpc probe does
            check = health_pb2_grpc.HealthStub(channel).Check
            for service in ("", "readiness"):
                status = wait_for(f"health {service!r}", lambda s=service: check(
                    health_pb2.HealthCheckRequest(service=s), timeout=5).status == health_pb2.HealthCheckResponse.SERVING, 60)
                assert status

        tls = secret_data(docs, f"{fullname}-tls") or {}
        token = (secret_data(docs, fullname) or {})["operator-token"].decode()
        credentials = grpc.ssl_channel_credentials(tls["ca.crt"])
        options = [("grpc.ssl_target_name_override", f"{fullname}.{NAMESPACE}.svc")]
        metadata = (("authorization", f"Bearer {token}"),)
        with grpc.secure_channel(f"127.0.0.1:{ports['CODEMODE_LISTEN']}", credentials, options=options) as channel:
            session = create_ready_session_sync(session_pb2_grpc.SessionServiceStub(channel), metadata=metadata)
            events = list(execute_pb2_grpc.ExecuteServiceStub(channel).Execute(
                execute_pb2.ExecuteRequest(session=session.name, code="print(6 * 7)"), timeout=60, metadata=metadata))
            output = b"".join(e.output.data for e in events if e.WhichOneof("event") == "output")
            if events[-1].WhichOneof("event") != "finished" or b"42" not in output:
                raise CheckFailed(f"[run] Execute did not print 42: {events[-1]}")
            skill_pb2_grpc.SkillStoreServiceStub(channel).CreateSkill(skill_pb2.CreateSkillRequest(
                skill=skill_pb2.Skill(name="skills/add_one", source=SKILL)), timeout=30, metadata=metadata)
            session_id = session.name.rsplit("/", 1)[-1]
            registered = any(f"{{s:{session_id}}}" in key.decode() for key in direct.keys("*"))
            session_pb2_grpc.SessionServiceStub(channel).DeleteSession(
                session_pb2.DeleteSessionRequest(name=session.name), timeout=60, metadata=metadata)
        first, last = (int(n) for n in env["CODEMODE_SANDBOX_UID_RANGE"].split("-"))
        wait_for("the sandbox's processes to end after DeleteSession (KILL in the bound?)",
                 lambda: not sandbox_processes(first, last), 30)
        prefix = env["CODEMODE_REDIS_PREFIX"]
        keys = [key.decode() for key in direct.keys(f"{prefix}:*")]
        if not any("add_one" in key for key in keys):
            raise CheckFailed(f"[run] the skill is not in Redis under {prefix}: (keys: {keys[:20]})")
        if shared and not registered:
            raise CheckFailed(f"[run] the session was not in the shared registry in Redis (keys: {keys[:20]})")
        direct.close()
        print(f"70-helm: the default rendering runs: redis-server from redis.conf, `codemode serve` from the "
              f"ConfigMap and Secrets; probes SERVING, TLS + operator token accepted, {len(keys)} Redis keys"
              + (f"; session registry redis: internal listener up (mTLS as {env['CODEMODE_INSTANCE_ID']}), "
                 "session registered in Redis" if shared else ""))
    except CheckFailed as exc:
        log = f"{root}/server.log"
        tail = open(log, errors="replace").read()[-3000:] if os.path.exists(log) else "(no server log)"
        raise CheckFailed(f"{exc}\nserver log (end):\n{tail}") from None
    finally:
        for process in reversed(processes):
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
                try:
                    process.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()
        shutil.rmtree(root, ignore_errors=True)


# --- 1. scenarios and refusals ----------------------------------------------------------------------------

def scenarios(tmp: str) -> Iterator[tuple[str, list[str], dict[str, Any], set[str]]]:
    """(name, helm args, the values given, Secrets named as existing ones)."""
    yield "default", [], {}, set()
    ca = CertificateAuthority.create("chart check sandbox CA")
    client_ca = CertificateAuthority.create("chart check client CA")
    files = {"sandbox-ca.crt": ca.cert_pem, "sandbox-ca.key": ca.key_pem(), "client-ca.crt": client_ca.cert_pem}
    for name, data in files.items():
        with open(os.path.join(tmp, name), "wb") as handle:
            handle.write(data)
    path = os.path.join(CHART, "ci", "external-redis-values.yaml")
    yield "external-redis", ["-f", path, "--set-file", f"sandboxCA.cert={tmp}/sandbox-ca.crt",
                             "--set-file", f"sandboxCA.key={tmp}/sandbox-ca.key",
                             "--set-file", f"tls.clientCA={tmp}/client-ca.crt"], yaml.safe_load(open(path)), set()
    path = os.path.join(CHART, "ci", "insecure-sandbox-values.yaml")
    values = yaml.safe_load(open(path))
    yield "insecure-sandbox", ["-f", path], values, {values["tls"]["existingSecret"]}
    yield "replicas-3-redis", ["--set", "replicaCount=3", "--set", "sessionRegistry=redis"], \
        {"replicaCount": 3, "sessionRegistry": "redis"}, set()
    yield "registry-local", ["--set", "sessionRegistry=local"], {"sessionRegistry": "local"}, set()


REFUSED = {
    "a sandbox kind the chart cannot run": ["--set", "sandbox.kind=docker"],
    "a chart-managed flag in settings": ["--set", "server.settings.tls-cert=/x"],
    "an unknown top-level key": ["--set", "replicas=3"],
    "an operator with a tenant": ["--set", "auth.principals[0].id=ops", "--set", "auth.principals[0].role=operator",
                                  "--set", "auth.principals[0].tenant=acme"],
    "no Redis at all": ["--set", "redis.enabled=false"],
    "an unknown session registry": ["--set", "sessionRegistry=foo"],
    "a chart-managed registry flag in settings": ["--set", "server.settings.internal-listen=0.0.0.0:1"],
    "the internal port on the health port": ["--set", "server.internalPort=50052"],
    "no principals at all": ["--set", "auth.operatorToken.enabled=false"],
    "a token that is not a sha256 digest": ["--set", "auth.principals[0].id=a", "--set", "auth.principals[0].role=tenant",
                                            "--set", "auth.principals[0].tenant=t", "--set", "auth.principals[0].tokens[0].sha256=abc"],
}


def main() -> int:
    try:
        with tempfile.TemporaryDirectory(prefix="cmh-") as tmp:
            rendered = {}
            for name, args, values, existing in scenarios(tmp):
                docs = render(name, args)
                check_schemas(name, docs)
                check_semantics(name, docs, values, existing)
                kinds = sorted({doc["kind"] for doc in docs})
                print(f"70-helm: {name}: {len(docs)} manifests valid for Kubernetes {' and '.join(KUBE_VERSIONS)} "
                      f"(strict schemas): {', '.join(kinds)}")
                rendered[name] = docs
        for what, args in REFUSED.items():
            result = helm_template(args)
            if result.returncode == 0:
                raise CheckFailed(f"[refusals] helm template accepted {what} ({' '.join(args)})")
        print(f"70-helm: {len(REFUSED)} invalid value sets refused by values.schema.json or the chart")
        run_default(rendered["default"])
    except CheckFailed as exc:
        print(f"70-helm: FAILED {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
