"""The deployment files (deploy/) checked against the real server.

- Every kustomize overlay of deploy/k8s/overlays renders (`kubectl kustomize`,
  offline) and passes check_rendered(): required fields, probes on the gRPC
  port with the health service names the server registers, every container
  argument a flag of `memserve serve --help`, grace period >= preStop sleep +
  --shutdown_timeout + the server's 5 s flush, GPUs requested where
  --device=cuda (as many as --memory_gpus, else --memory_shards), resources and securityContext
  set, no :latest image, Services / NetworkPolicy / ServiceMonitor ports that
  name container ports, one autoscaler whose metric the prometheus-adapter
  rule serves.
- Each overlay's memserve arguments start the real server through the image's
  entrypoint (deploy/docker/entrypoint.sh), with loopback overrides appended;
  the probes' service names answer SERVING there, and SIGTERM drains (exit 0).
- memserve started by the entrypoint as PID 1 of a PID namespace (as in a
  container) drains on SIGTERM and exits 0 (skipped where no namespace can be
  made, i.e. not root).
- The entrypoint maps the environment to flags as documented;
  collect_libs.sh gathers the libraries `memserve` loads; the Dockerfiles
  copy only files that exist and are built, and pin their base images.
- check_rendered() rejects planted mistakes (a bad probe port in a copy of the
  sources, and others), so a pass means something.

The manifests are written for kustomize >= v4 (kubectl >= 1.21). Debian 12's
kubectl (1.20, kustomize v2.0.3) renders a copy translated to v2's spelling
(`bases:`, `patchesStrategicMerge:`), same documents.

Run: bazel test //tests/deploy:deploy_test, or by hand (after `bazel build
//server:memserve //proto:memserve_py //proto:health_py`):
  /usr/bin/python3 tests/deploy/deploy_test.py --memserve bazel-bin/server/memserve
"""
import copy
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "e2e"))

import grpc  # noqa: E402
import yaml  # noqa: E402

import harness  # noqa: E402
from harness import SERVING, health_pb2  # noqa: E402

ROOT = harness.ROOT
DEPLOY = os.path.join(ROOT, "deploy")
K8S = os.path.join(DEPLOY, "k8s")
DOCKER = os.path.join(DEPLOY, "docker")
ENTRYPOINT = os.path.join(DOCKER, "entrypoint.sh")
COLLECT_LIBS = os.path.join(DOCKER, "collect_libs.sh")

OVERLAYS = ["cpu", "gpu", "gpu-sharded-pool", "keda", "model-init-container"]
# The server's last step after the drain: up to 5 s for finished calls to
# deliver their last messages (server/serve.cc, RunServe).
FLUSH_SECONDS = 5
# A startupProbe must allow at least this long for loading a large table.
MIN_STARTUP_SECONDS = 600
# The queue-length metric memserve exports (server/metrics) and the name
# prometheus-adapter gives it for the HPA (deploy/k8s/prometheus-adapter/rules.yaml).
EXPORTED_METRIC = "memserve:num_requests_waiting"
MAIN_CONTAINER = "memserve"


# -- helpers -------------------------------------------------------------------


def serve_flags(memserve):
    """The flags `memserve serve --help` lists (names) and their defaults."""
    out = subprocess.run([memserve, "serve", "--help"], capture_output=True, text=True,
                         check=True).stdout
    flags = {}
    for m in re.finditer(r"^  --(\w+)(?: \(default: (.*)\))?$", out, re.M):
        flags[m.group(1)] = m.group(2)
    if "listen" not in flags or "shutdown_timeout" not in flags:
        raise AssertionError("cannot read the flags from `memserve serve --help`:\n" + out)
    return flags


def is_loopback_address(address):
    """True for HOST:PORT on 127.0.0.0/8, localhost or [::1] (server/exposure.h)."""
    host = address.rsplit(":", 1)[0].strip("[]")
    return host in ("localhost", "::1") or host.startswith("127.")


def parse_duration(text):
    """Seconds of a memserve duration: 30s, 500ms, 2m, 1h30m, or bare seconds."""
    if re.fullmatch(r"\d+(\.\d+)?", text):
        return float(text)
    units = {"h": 3600, "m": 60, "s": 1, "ms": 0.001, "us": 1e-6, "ns": 1e-9}
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|us|ns|h|m|s)", text)
    if not parts or "".join(a + b for a, b in parts) != text:
        raise ValueError("not a duration: %r" % text)
    return sum(float(a) * units[b] for a, b in parts)


def parse_args(args):
    """`--name=value` / `--name value` / `--name` -> [(name, value or None)]."""
    out = []
    i = 0
    while i < len(args):
        a = args[i]
        if not a.startswith("--"):
            out.append((None, a))
        elif "=" in a:
            name, value = a[2:].split("=", 1)
            out.append((name, value))
        elif i + 1 < len(args) and not args[i + 1].startswith("--"):
            out.append((a[2:], args[i + 1]))
            i += 1
        else:
            out.append((a[2:], None))
        i += 1
    return out


def kustomize_major(kubectl):
    """The major version of kubectl's built-in kustomize (2 for kubectl <= 1.20)."""
    r = subprocess.run([kubectl, "version", "--client", "-o", "json"], capture_output=True,
                       text=True)
    try:
        info = json.loads(r.stdout)
    except ValueError:
        info = {}
    version = info.get("kustomizeVersion", "")
    m = re.match(r"v(\d+)", version)
    if m:
        return int(m.group(1))
    minor = int(re.sub(r"\D.*", "", info.get("clientVersion", {}).get("minor", "0")) or 0)
    return 4 if minor >= 21 else 2


def translate_to_kustomize_v2(tree):
    """Rewrites every kustomization.yaml under `tree` in kustomize v2.0.3's
    spelling: directories in `resources` -> `bases`, `patches` (paths only)
    -> `patchesStrategicMerge`."""
    for dirpath, _, files in os.walk(tree):
        if "kustomization.yaml" not in files:
            continue
        path = os.path.join(dirpath, "kustomization.yaml")
        with open(path) as f:
            k = yaml.safe_load(f)
        resources = k.get("resources", [])
        k["bases"] = [r for r in resources if os.path.isdir(os.path.join(dirpath, r))]
        k["resources"] = [r for r in resources if r not in k["bases"]]
        patches = k.pop("patches", [])
        if patches:
            if any(set(p) != {"path"} for p in patches):
                raise AssertionError("%s: only `patches: - path:` translates to kustomize v2" %
                                     path)
            k["patchesStrategicMerge"] = [p["path"] for p in patches]
        for key in ("bases", "resources"):
            if not k[key]:
                del k[key]
        with open(path, "w") as f:
            yaml.safe_dump(k, f)


def v2_deletions(kustomization_dir):
    """(kind, name) of the `$patch: delete` patches of a kustomization and its
    bases. Kustomize v2.0.3 ignores them on kinds it does not know (an
    autoscaling/v2 HPA), so under v2 render() applies them itself."""
    path = os.path.join(kustomization_dir, "kustomization.yaml")
    with open(path) as f:
        k = yaml.safe_load(f)
    out = set()
    for patch in k.get("patchesStrategicMerge", []):
        with open(os.path.join(kustomization_dir, patch)) as f:
            doc = yaml.safe_load(f)
        if doc.get("$patch") == "delete":
            out.add((doc["kind"], doc["metadata"]["name"]))
    for base in k.get("bases", []):
        out |= v2_deletions(os.path.join(kustomization_dir, base))
    return out


def render(kubectl, overlay_dir, v2=False):
    r = subprocess.run([kubectl, "kustomize", overlay_dir], capture_output=True, text=True,
                       env=dict(os.environ, HOME=os.environ.get("TEST_TMPDIR", "/tmp")))
    if r.returncode != 0:
        raise AssertionError("kubectl kustomize %s failed:\n%s" % (overlay_dir, r.stderr))
    docs = [d for d in yaml.safe_load_all(r.stdout) if d]
    if v2:
        deleted = v2_deletions(overlay_dir)
        docs = [d for d in docs if (d["kind"], d["metadata"]["name"]) not in deleted]
    return docs


def copy_tree(src):
    """A real copy (symlinks followed: kustomize refuses files that resolve
    outside the kustomization's root, as Bazel's runfiles do)."""
    dst = os.path.join(harness.tmpdir("k8s_"), "k8s")
    shutil.copytree(src, dst, symlinks=False)
    return dst


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def adapter_metric_name():
    with open(os.path.join(K8S, "prometheus-adapter", "rules.yaml")) as f:
        rules = yaml.safe_load(f)["rules"]
    for rule in rules:
        if EXPORTED_METRIC in rule["seriesQuery"]:
            return rule["name"]["as"]
    raise AssertionError("prometheus-adapter/rules.yaml has no rule for " + EXPORTED_METRIC)


# -- the structural check --------------------------------------------------------


def matches(selector, labels):
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def image_problem(image):
    name = image.split("@")[0]
    if "@sha256:" in image:
        return None
    tag = name.rsplit(":", 1)[1] if ":" in name.rsplit("/", 1)[-1] else ""
    if not tag:
        return "image %s has no tag (would pull :latest)" % image
    if tag == "latest":
        return "image %s uses :latest" % image
    return None


def container_security_problems(where, c, pod_sc):
    sc = c.get("securityContext", {})
    p = []
    if not (sc.get("runAsNonRoot") or pod_sc.get("runAsNonRoot")):
        p.append("%s: runAsNonRoot is not true" % where)
    if sc.get("allowPrivilegeEscalation") is not False:
        p.append("%s: allowPrivilegeEscalation must be false" % where)
    if sc.get("readOnlyRootFilesystem") is not True:
        p.append("%s: readOnlyRootFilesystem must be true" % where)
    if sc.get("privileged"):
        p.append("%s: privileged" % where)
    if "ALL" not in sc.get("capabilities", {}).get("drop", []):
        p.append("%s: capabilities.drop must hold ALL" % where)
    return p


def resources_problems(where, c):
    r = c.get("resources", {})
    p = []
    for key in ("cpu", "memory"):
        if key not in r.get("requests", {}):
            p.append("%s: resources.requests.%s is not set" % (where, key))
    if "memory" not in r.get("limits", {}):
        p.append("%s: resources.limits.memory is not set" % where)
    return p


def entrypoint_variables():
    """{variable: flag} of the entrypoint's ENV_FLAGS table, in its order."""
    with open(ENTRYPOINT) as f:
        text = f.read()
    table = re.search(r"ENV_FLAGS=\((.*?)\)", text, re.S).group(1)
    return dict(re.findall(r"^\s*(MEMSERVE_\w+)=(\w+)$", table, re.M))


def container_flags(container, variables):
    """The `memserve serve` command line the entrypoint makes of a container:
    ([(flag or None, value)], problems). The variables' flags come first, then
    the arguments (docs/deploy.md)."""
    problems = []
    env = {}
    for e in container.get("env", []):
        if not e["name"].startswith("MEMSERVE_"):
            continue
        if e["name"] not in variables:
            problems.append("memserve: env %s is not a variable of the entrypoint (ignored)" %
                            e["name"])
        elif "value" not in e:
            problems.append("memserve: env %s has no literal value" % e["name"])
        else:
            env[e["name"]] = str(e["value"])
    out = [(flag, env[v]) for v, flag in variables.items() if env.get(v)]
    return out + parse_args(container.get("args", [])), problems


def check_rendered(docs, flags, health_services, adapter_metric, variables):
    """Problems (strings) of one rendered overlay; [] when it is right.

    flags: {name: default} of `memserve serve --help`; health_services:
    {"readiness": name, "liveness": name} the server registers;
    adapter_metric: the custom-metrics name the prometheus-adapter rule serves;
    variables: the entrypoint's {variable: flag}.
    """
    p = []
    for d in docs:
        for key in ("apiVersion", "kind"):
            if not d.get(key):
                p.append("a document has no %s" % key)
        if not d.get("metadata", {}).get("name"):
            p.append("a %s has no metadata.name" % d.get("kind"))
    by_kind = {}
    for d in docs:
        by_kind.setdefault(d.get("kind"), []).append(d)
    deployments = by_kind.get("Deployment", [])
    if len(deployments) != 1:
        return p + ["expected one Deployment, got %d" % len(deployments)]
    dep = deployments[0]
    spec = dep["spec"]
    pod = spec["template"]["spec"]
    pod_labels = spec["template"]["metadata"].get("labels", {})
    if not matches(spec.get("selector", {}).get("matchLabels"), pod_labels):
        p.append("Deployment selector does not match the pod labels")
    pod_sc = pod.get("securityContext", {})
    if pod_sc.get("runAsNonRoot") is not True:
        p.append("pod securityContext.runAsNonRoot must be true")
    if not pod_sc.get("runAsUser"):
        p.append("pod securityContext.runAsUser must be a non-zero uid")
    if pod.get("enableServiceLinks") is not False:
        p.append("enableServiceLinks must be false (service links define MEMSERVE_* "
                 "variables the entrypoint reads)")
    if not pod.get("topologySpreadConstraints"):
        p.append("no topologySpreadConstraints")
    if spec.get("strategy", {}).get("rollingUpdate", {}).get("maxUnavailable", 1) != 0:
        p.append("rollingUpdate.maxUnavailable must be 0 (no capacity lost in a rollout)")

    containers = {c["name"]: c for c in pod.get("containers", [])}
    if MAIN_CONTAINER not in containers:
        return p + ["no container named %s" % MAIN_CONTAINER]
    for kind in ("containers", "initContainers"):
        for c in pod.get(kind, []):
            where = "%s %s" % (kind[:-1], c["name"])
            problem = image_problem(c.get("image", ""))
            if problem:
                p.append("%s: %s" % (where, problem))
            p += resources_problems(where, c)
            p += container_security_problems(where, c, pod_sc)
    main = containers[MAIN_CONTAINER]

    # Arguments: flags of `memserve serve`, the first one a flag (the
    # entrypoint runs a first argument without '-' as a command).
    args = main.get("args", [])
    if main.get("command"):
        p.append("memserve: command is set (it replaces the image's entrypoint)")
    if args and not args[0].startswith("-"):
        p.append("memserve: the first argument %r is not a flag (the entrypoint would run it)"
                 % args[0])
    values = {}
    given = set()
    command_line, env_problems = container_flags(main, variables)
    p += env_problems
    for name, value in command_line:
        given.add(name)
        if name is None:
            p.append("memserve: argument %r is not a flag" % value)
        elif name not in flags:
            p.append("memserve: --%s is not a flag of `memserve serve --help`" % name)
        else:
            values[name] = value
    device = values.get("device", flags.get("device"))

    # Safe defaults: memserve refuses plaintext on a non-loopback address
    # unless --insecure (the gRPC port also takes TLS).
    insecure = "insecure" in given and values.get("insecure") in (None, "true", "1")
    for flag in ("listen", "metrics_listen", "http_listen"):
        address = values.get(flag)
        if not address or is_loopback_address(address):
            continue
        if not insecure and not (flag == "listen" and values.get("tls_cert")):
            p.append("memserve: --%s=%s is not loopback and has no TLS: the server refuses it "
                     "without %s--insecure" % (flag, address,
                                              "--tls_cert or " if flag == "listen" else ""))

    ports = {}
    for port in main.get("ports", []):
        ports[port.get("name")] = port["containerPort"]
    for name in ("grpc", "metrics"):
        if name not in ports:
            p.append("memserve: no container port named %s" % name)
    grpc_port = ports.get("grpc")
    for flag, port_name in (("listen", "grpc"), ("metrics_listen", "metrics")):
        address = values.get(flag)
        if flag not in given:
            p.append("memserve: --%s is not set (the %s port)" % (flag, port_name))
        elif address is not None and port_name in ports and \
                not address.endswith(":%d" % ports[port_name]):
            p.append("memserve: --%s=%s is not on the %s port %d" %
                     (flag, address, port_name, ports[port_name]))

    # Probes: native gRPC, on the gRPC port, with the server's service names.
    wanted = {"startupProbe": health_services["readiness"],
              "readinessProbe": health_services["readiness"],
              "livenessProbe": health_services["liveness"]}
    for probe_name, service in wanted.items():
        probe = main.get(probe_name)
        if not probe or "grpc" not in probe:
            p.append("memserve: %s must be a grpc probe" % probe_name)
            continue
        if probe["grpc"].get("port") != grpc_port:
            p.append("memserve: %s port %s is not the grpc container port %s" %
                     (probe_name, probe["grpc"].get("port"), grpc_port))
        if probe["grpc"].get("service", "") != service:
            p.append("memserve: %s service %r, the server registers %r" %
                     (probe_name, probe["grpc"].get("service", ""), service))
    startup = main.get("startupProbe", {})
    budget = startup.get("periodSeconds", 10) * startup.get("failureThreshold", 3)
    if budget < MIN_STARTUP_SECONDS:
        p.append("memserve: startupProbe allows %d s to load, want >= %d" %
                 (budget, MIN_STARTUP_SECONDS))

    # Drain: preStop sleep, then SIGTERM; the grace period covers both.
    command = main.get("lifecycle", {}).get("preStop", {}).get("exec", {}).get("command", [])
    sleep = main.get("lifecycle", {}).get("preStop", {}).get("sleep", {}).get("seconds")
    if sleep is None and len(command) == 2 and command[0] == "sleep":
        sleep = float(command[1])
    if sleep is None:
        p.append("memserve: lifecycle.preStop must sleep")
        sleep = 0
    shutdown = parse_duration(values.get("shutdown_timeout") or flags["shutdown_timeout"])
    grace = pod.get("terminationGracePeriodSeconds", 30)
    if grace < sleep + shutdown + FLUSH_SECONDS:
        p.append("terminationGracePeriodSeconds %s < preStop %s + --shutdown_timeout %s + %s" %
                 (grace, sleep, shutdown, FLUSH_SECONDS))

    # The model: mounted read-only where --model points, from a read-only
    # claim or a volume an init container fills.
    mounts = {m["name"]: m for m in main.get("volumeMounts", [])}
    volumes = {v["name"]: v for v in pod.get("volumes", [])}
    model_mount = next((m for m in mounts.values() if m["mountPath"] == values.get("model")),
                       None)
    if model_mount is None:
        p.append("memserve: no volume mounted at --model=%s" % values.get("model"))
    else:
        if model_mount.get("readOnly") is not True:
            p.append("memserve: the model volume is not mounted readOnly")
        volume = volumes.get(model_mount["name"], {})
        if "persistentVolumeClaim" in volume:
            if volume["persistentVolumeClaim"].get("readOnly") is not True:
                p.append("the model claim is not readOnly")
            claims = [d["metadata"]["name"] for d in by_kind.get("PersistentVolumeClaim", [])]
            if volume["persistentVolumeClaim"]["claimName"] not in claims:
                p.append("the model claim %s is not defined" %
                         volume["persistentVolumeClaim"]["claimName"])
        elif "emptyDir" in volume:
            if not any(m["name"] == model_mount["name"]
                       for c in pod.get("initContainers", []) for m in c.get("volumeMounts", [])):
                p.append("the model emptyDir is filled by no init container")
        else:
            p.append("the model volume is neither a claim nor an emptyDir")

    # GPUs: as many as the pool's shards where --device=cuda, none otherwise.
    gpus = int(main.get("resources", {}).get("limits", {}).get("nvidia.com/gpu", 0))
    if device == "cuda":
        # --memory_gpus=all: every GPU the pod gets (at least one).
        memory_gpus = values.get("memory_gpus")
        want = (max(gpus, 1) if memory_gpus == "all" else
                int(memory_gpus or values.get("memory_shards") or 1))
        if gpus != want:
            p.append("memserve: --device=cuda with %d shard GPU(s), nvidia.com/gpu limit %d" %
                     (want, gpus))
    elif gpus:
        p.append("memserve: nvidia.com/gpu requested with --device=%s" % device)

    # Services and the policy name container ports.
    def port_ok(target):
        return target in ports or target in ports.values()

    services = by_kind.get("Service", [])
    headless = [s for s in services if s["spec"].get("clusterIP") == "None"]
    cluster = [s for s in services if s["spec"].get("clusterIP") != "None"]
    if not headless:
        p.append("no headless Service (clusterIP: None) for client-side balancing")
    if not cluster:
        p.append("no ClusterIP Service")
    for s in services:
        name = s["metadata"]["name"]
        if not matches(s["spec"].get("selector"), pod_labels):
            p.append("Service %s does not select the pods" % name)
        for sp in s["spec"].get("ports", []):
            if not port_ok(sp.get("targetPort", sp["port"])):
                p.append("Service %s port %s targets %s, not a container port" %
                         (name, sp.get("name"), sp.get("targetPort")))
    for s in headless:
        if "grpc" not in [sp.get("name") for sp in s["spec"]["ports"]]:
            p.append("Service %s has no port named grpc" % s["metadata"]["name"])
    for s in cluster:
        names = [sp.get("name") for sp in s["spec"]["ports"]]
        for want in ("grpc", "metrics"):
            if want not in names:
                p.append("Service %s has no port named %s" % (s["metadata"]["name"], want))

    policies = by_kind.get("NetworkPolicy", [])
    if not policies:
        p.append("no NetworkPolicy")
    for np in policies:
        if not matches(np["spec"]["podSelector"].get("matchLabels"), pod_labels):
            p.append("NetworkPolicy does not select the pods")
        allowed = set()
        for rule in np["spec"].get("ingress", []):
            for rp in rule.get("ports", []):
                if not port_ok(rp["port"]):
                    p.append("NetworkPolicy port %s is not a container port" % rp["port"])
                allowed.add(ports.get(rp["port"], rp["port"]))
        want_ports = {ports.get("grpc"), ports.get("metrics")}
        if allowed != want_ports:
            p.append("NetworkPolicy allows ports %s, want exactly grpc and metrics %s" %
                     (sorted(allowed, key=str), sorted(want_ports, key=str)))

    for sm in by_kind.get("ServiceMonitor", []):
        selected = [s for s in services if matches(sm["spec"]["selector"].get("matchLabels"),
                                                   s["metadata"].get("labels", {}))]
        for ep in sm["spec"].get("endpoints", []):
            hits = [s for s in selected
                    if ep.get("port") in [sp.get("name") for sp in s["spec"]["ports"]]]
            if len(hits) != 1:
                p.append("ServiceMonitor endpoint port %s is on %d selected Services, want 1" %
                         (ep.get("port"), len(hits)))
    if not by_kind.get("ServiceMonitor"):
        p.append("no ServiceMonitor")

    pdbs = by_kind.get("PodDisruptionBudget", [])
    if not pdbs or not matches(pdbs[0]["spec"]["selector"].get("matchLabels"), pod_labels):
        p.append("no PodDisruptionBudget selecting the pods")

    # One autoscaler: the HPA (prometheus-adapter) or KEDA's ScaledObject.
    hpas = by_kind.get("HorizontalPodAutoscaler", [])
    scaled = by_kind.get("ScaledObject", [])
    if len(hpas) + len(scaled) != 1:
        p.append("want one autoscaler, got %d HPA(s) and %d ScaledObject(s)" %
                 (len(hpas), len(scaled)))
    for a in hpas + scaled:
        target = a["spec"]["scaleTargetRef"]
        if target.get("kind", "Deployment") != "Deployment" or \
                target["name"] != dep["metadata"]["name"]:
            p.append("%s does not scale the Deployment" % a["kind"])
    for h in hpas:
        names = [m["pods"]["metric"]["name"] for m in h["spec"]["metrics"] if m["type"] == "Pods"]
        if names != [adapter_metric]:
            p.append("HPA metrics %s, want the prometheus-adapter rule's %s" %
                     (names, adapter_metric))
    for s in scaled:
        for t in s["spec"]["triggers"]:
            if EXPORTED_METRIC not in t["metadata"].get("query", ""):
                p.append("ScaledObject trigger does not query %s" % EXPORTED_METRIC)
    return p


# -- tests ---------------------------------------------------------------------


class DeployTest(unittest.TestCase):
    kubectl = None
    flags = None
    rendered = None  # overlay -> documents

    @classmethod
    def setUpClass(cls):
        cls.memserve = harness.memserve_binary()
        cls.flags = serve_flags(cls.memserve)
        cls.kubectl = shutil.which("kubectl")
        if cls.kubectl is None:
            raise AssertionError("no kubectl on PATH (tools/setup.sh installs Debian's "
                                 "kubernetes-client)")
        cls.v2 = kustomize_major(cls.kubectl) < 4
        cls.adapter_metric = adapter_metric_name()
        cls.variables = entrypoint_variables()
        # The names the server registers (server/serve.cc): readiness is the
        # API's service, liveness the whole server.
        cls.health = {"readiness": harness.SERVICE, "liveness": ""}
        cls.rendered = {o: cls.render_overlay(K8S, o) for o in OVERLAYS}

    @classmethod
    def render_overlay(cls, k8s_dir, overlay):
        tree = copy_tree(k8s_dir)
        if cls.v2:
            translate_to_kustomize_v2(tree)
        return render(cls.kubectl, os.path.join(tree, "overlays", overlay), cls.v2)

    def check(self, docs):
        return check_rendered(docs, self.flags, self.health, self.adapter_metric,
                              self.variables)

    def test_every_overlay_is_tested(self):
        self.assertEqual(sorted(os.listdir(os.path.join(K8S, "overlays"))), sorted(OVERLAYS))

    def test_overlays_pass_the_structural_check(self):
        for overlay, docs in self.rendered.items():
            with self.subTest(overlay=overlay):
                self.assertEqual(self.check(docs), [])

    def test_gpu_overlays_request_gpus(self):
        for overlay, want in (("cpu", 0), ("gpu", 1), ("gpu-sharded-pool", 4)):
            dep = [d for d in self.rendered[overlay] if d["kind"] == "Deployment"][0]
            main = dep["spec"]["template"]["spec"]["containers"][0]
            self.assertEqual(int(main["resources"]["limits"].get("nvidia.com/gpu", 0)), want,
                             overlay)

    def test_the_check_rejects_planted_mistakes(self):
        # In the sources: the readiness probe on another port.
        tree = copy_tree(K8S)
        path = os.path.join(tree, "base", "deployment.yaml")
        with open(path) as f:
            text = f.read()
        bad = text.replace("readinessProbe:\n          grpc:\n            port: 50051",
                           "readinessProbe:\n          grpc:\n            port: 50052")
        self.assertNotEqual(bad, text)
        with open(path, "w") as f:
            f.write(bad)
        if self.v2:
            translate_to_kustomize_v2(tree)
        problems = self.check(render(self.kubectl, os.path.join(tree, "overlays", "cpu"),
                                     self.v2))
        self.assertTrue(any("readinessProbe port 50052" in x for x in problems), problems)

        # In rendered documents: one mistake each, each named.
        def main_of(docs):
            dep = [d for d in docs if d["kind"] == "Deployment"][0]
            return dep["spec"]["template"]["spec"], dep["spec"]["template"]["spec"][
                "containers"][0]

        def plant(overlay, mutate, expect):
            docs = copy.deepcopy(self.rendered[overlay])
            pod, main = main_of(docs)
            mutate(docs, pod, main)
            problems = self.check(docs)
            self.assertTrue(any(expect in x for x in problems),
                            "%s: want a problem with %r, got %s" % (overlay, expect, problems))

        plant("cpu", lambda d, pod, m: m["readinessProbe"]["grpc"].update(
            service="memserve.v1.Memserve"), "readinessProbe service")
        plant("cpu", lambda d, pod, m: m["livenessProbe"]["grpc"].update(
            service=harness.SERVICE), "livenessProbe service")
        plant("cpu", lambda d, pod, m: m["args"].append("--no_such_flag=1"), "--no_such_flag")
        plant("cpu", lambda d, pod, m: m["args"].remove("--insecure"),
              "--listen=0.0.0.0:50051 is not loopback")
        plant("cpu", lambda d, pod, m: m["env"].append({"name": "MEMSERVE_THREAD", "value": "2"}),
              "MEMSERVE_THREAD is not a variable")
        plant("gpu-sharded-pool", lambda d, pod, m: [e for e in m["env"] if e["name"] ==
                                                     "MEMSERVE_MEMORY_GPUS"][0].update(
            value="2"), "nvidia.com/gpu")
        plant("cpu", lambda d, pod, m: m["args"].append("--shutdown_timeout=2m"),
              "terminationGracePeriodSeconds")
        plant("cpu", lambda d, pod, m: pod.update(terminationGracePeriodSeconds=30),
              "terminationGracePeriodSeconds")
        plant("gpu", lambda d, pod, m: m["resources"]["limits"].pop("nvidia.com/gpu"),
              "nvidia.com/gpu")
        plant("gpu-sharded-pool", lambda d, pod, m: m["resources"]["limits"].update(
            {"nvidia.com/gpu": 1}), "nvidia.com/gpu")
        plant("cpu", lambda d, pod, m: m.update(image="memserve-cpu:latest"), ":latest")
        plant("cpu", lambda d, pod, m: m.update(image="memserve-cpu"), "no tag")
        plant("cpu", lambda d, pod, m: m["resources"].pop("requests"), "resources.requests")
        plant("cpu", lambda d, pod, m: m["securityContext"].update(
            allowPrivilegeEscalation=True), "allowPrivilegeEscalation")
        plant("cpu", lambda d, pod, m: m["securityContext"].pop("readOnlyRootFilesystem"),
              "readOnlyRootFilesystem")
        plant("cpu", lambda d, pod, m: m["volumeMounts"][0].pop("readOnly"), "readOnly")
        plant("cpu", lambda d, pod, m: [x for x in d if x["kind"] == "NetworkPolicy"][0]["spec"][
            "ingress"][0]["ports"].pop(), "NetworkPolicy allows")
        plant("cpu", lambda d, pod, m: [x for x in d if x["kind"] == "Service" and x["spec"].get(
            "clusterIP") != "None"][0]["spec"]["ports"][1].update(targetPort="metric"),
            "not a container port")
        plant("cpu", lambda d, pod, m: m["ports"][0].update(containerPort=50052),
              "not on the grpc port")
        plant("cpu", lambda d, pod, m: [x for x in d if x["kind"] == "HorizontalPodAutoscaler"][
            0]["spec"]["metrics"][0]["pods"]["metric"].update(name="num_requests_waiting"),
            "prometheus-adapter")
        plant("keda", lambda d, pod, m: d.append(copy.deepcopy(
            [x for x in self.rendered["cpu"] if x["kind"] == "HorizontalPodAutoscaler"][0])),
            "one autoscaler")

    def test_overlay_arguments_start_the_real_server(self):
        """Each overlay's memserve arguments, through the image's entrypoint, with
        loopback overrides after them (the last value of a flag wins)."""
        for overlay, docs in self.rendered.items():
            with self.subTest(overlay=overlay):
                dep = [d for d in docs if d["kind"] == "Deployment"][0]
                main = dep["spec"]["template"]["spec"]["containers"][0]
                srv = EntrypointServer(main, name=overlay)
                device = dict(container_flags(main, self.variables)[0]).get("device")
                if device == "cuda":
                    # Without a CUDA device (or backend) the server exits 1 naming
                    # CUDA, after the command line parsed (a bad one exits 2).
                    try:
                        srv.start(timeout=60)
                    except harness.ServerError:
                        rc = srv.wait_exit(10)
                        self.assertEqual(rc, 1, srv.stderr_tail())
                        self.assertIn("cuda", srv.stderr_text().lower())
                        continue
                else:
                    srv.start(timeout=60)
                try:
                    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
                        service = main[probe]["grpc"].get("service", "")
                        self.assertEqual(srv.check_health(service), SERVING, probe)
                    with self.assertRaises(grpc.RpcError) as e:
                        srv.check_health("memserve.v1.NoSuchService")
                    self.assertEqual(e.exception.code(), grpc.StatusCode.NOT_FOUND)
                finally:
                    rc = srv.stop(timeout=60)
                self.assertEqual(rc, 0, srv.stderr_tail())
                self.assertRegex(srv.stderr_text(), r"(?m)\bstopped\b")


class EntrypointServer(harness.Server):
    """`memserve serve` started by deploy/docker/entrypoint.sh as in `container`
    (its MEMSERVE_* variables and its arguments), with loopback overrides after
    them: the demo model, an OS-picked gRPC port, a free metrics port."""

    def __init__(self, container, name):
        super().__init__(name=name)
        self.args = list(container.get("args", []))
        self.env = ["%s=%s" % (e["name"], e["value"]) for e in container.get("env", [])
                    if e["name"].startswith("MEMSERVE_")]

    def command(self):
        overrides = ["--model=" + harness.DEMO_MODEL, "--listen=127.0.0.1:0",
                     "--port_file=" + self.port_file, "--threads=2", "--kv_cache_mb=64"]
        if any(a.startswith("--metrics_listen") for a in self.args):
            overrides.append("--metrics_listen=127.0.0.1:%d" % free_port())
        return ["/usr/bin/env", "MEMSERVE_BIN=" + harness.memserve_binary()] + self.env + \
            [ENTRYPOINT] + self.args + overrides


class EntrypointTest(unittest.TestCase):
    """entrypoint.sh with a fake memserve that prints its argv."""

    def run_entrypoint(self, args=(), env=None):
        fake = os.path.join(harness.tmpdir("fake_"), "memserve")
        with open(fake, "w") as f:
            f.write("#!/usr/bin/python3\nimport json, sys\nprint(json.dumps(sys.argv[1:]))\n")
        os.chmod(fake, 0o755)
        full_env = {"PATH": "/usr/bin:/bin", "MEMSERVE_BIN": fake}
        full_env.update(env or {})
        r = subprocess.run([ENTRYPOINT] + list(args), capture_output=True, text=True,
                           env=full_env)
        self.assertEqual(r.returncode, 0, r.stderr)
        return r.stdout

    def test_environment_becomes_flags_before_the_arguments(self):
        out = self.run_entrypoint(
            ["--threads=4", "--model_name", "two words"],
            {"MEMSERVE_MODEL": "/model", "MEMSERVE_DEVICE": "cuda", "MEMSERVE_THREADS": "",
             "MEMSERVE_SHUTDOWN_TIMEOUT": "45s", "MEMSERVE_MODEL_NAME": "a b",
             # What Kubernetes' service links would define: not flags.
             "MEMSERVE_PORT": "tcp://10.0.0.1:50051", "MEMSERVE_SERVICE_HOST": "10.0.0.1"})
        self.assertEqual(json.loads(out), [
            "serve", "--model=/model", "--model_name=a b", "--device=cuda",
            "--shutdown_timeout=45s", "--threads=4", "--model_name", "two words"])

    def test_no_environment_no_flags(self):
        self.assertEqual(json.loads(self.run_entrypoint()), ["serve"])

    def test_a_command_runs_instead_of_the_server(self):
        self.assertEqual(self.run_entrypoint(["echo", "memserve-cli", "health"]),
                         "memserve-cli health\n")

    def test_every_variable_maps_to_a_real_flag(self):
        variables = entrypoint_variables()
        self.assertGreater(len(variables), 5)
        flags = serve_flags(harness.memserve_binary())
        for variable, flag in variables.items():
            self.assertIn(flag, flags, "%s -> --%s" % (variable, flag))
            self.assertEqual(variable, "MEMSERVE_" + flag.upper())


class Pid1Test(unittest.TestCase):
    """In a container the entrypoint's exec makes memserve PID 1, which the
    kernel spares signals it has no handler for; memserve blocks SIGTERM and
    waits for it, so it must still drain. Run in a new PID namespace."""

    def test_memserve_as_pid_1_drains_on_sigterm(self):
        unshare = shutil.which("unshare")
        probe = subprocess.run([unshare or "unshare", "--pid", "--fork", "--mount-proc", "true"],
                               capture_output=True, text=True) if unshare else None
        if probe is None or probe.returncode != 0:
            self.skipTest("cannot make a PID namespace here (needs root): %s" %
                          (probe.stderr.strip() if probe else "no unshare"))
        work = harness.tmpdir("pid1_")
        port_file = os.path.join(work, "port")
        log = open(os.path.join(work, "stderr.log"), "w+")
        env = dict(os.environ, MEMSERVE_BIN=harness.memserve_binary(),
                   MEMSERVE_MODEL=harness.DEMO_MODEL)
        proc = subprocess.Popen([unshare, "--pid", "--fork", "--mount-proc", "--kill-child",
                                 ENTRYPOINT, "--listen=127.0.0.1:0", "--port_file=" + port_file,
                                 "--threads=1", "--kv_cache_mb=64"],
                                stdout=log, stderr=subprocess.STDOUT, env=env)
        try:
            deadline = time.monotonic() + 60
            while not (os.path.exists(port_file) and open(port_file).read().strip()):
                self.assertIsNone(proc.poll(), "exited early")
                self.assertLess(time.monotonic(), deadline, "no port file")
                time.sleep(0.05)
            port = int(open(port_file).read())
            with grpc.insecure_channel("127.0.0.1:%d" % port) as channel:
                health = harness.health_pb2_grpc.HealthStub(channel)
                while health.Check(health_pb2.HealthCheckRequest(service=harness.SERVICE),
                                   timeout=5).status != SERVING:
                    self.assertLess(time.monotonic(), deadline, "not ready")
                    time.sleep(0.05)
            with open("/proc/%d/task/%d/children" % (proc.pid, proc.pid)) as f:
                (child,) = [int(x) for x in f.read().split()]
            with open("/proc/%d/status" % child) as f:
                status = f.read()
            self.assertEqual(re.search(r"^Name:\s+(.*)$", status, re.M).group(1), "memserve",
                             "PID 1 is not memserve (does the entrypoint exec it?)")
            nspid = re.search(r"^NSpid:\s+(.*)$", status, re.M).group(1).split()
            self.assertEqual(nspid[-1], "1", "memserve is not PID 1 of its namespace")
            os.kill(child, signal.SIGTERM)
            try:
                self.assertEqual(proc.wait(timeout=60), 0)
            except subprocess.TimeoutExpired:
                self.fail("PID 1 ignored SIGTERM (still running after 60 s)")
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        log.seek(0)
        self.assertRegex(log.read(), r"(?m)\bstopped\b")


class DockerfileTest(unittest.TestCase):
    DOCKERFILES = ["Dockerfile.cpu", "Dockerfile.cuda"]

    def instructions(self, name):
        with open(os.path.join(DOCKER, name)) as f:
            text = re.sub(r"\\\n", " ", f.read())
        return [line.strip().split(None, 1) for line in text.splitlines()
                if line.strip() and not line.strip().startswith("#")]

    def test_base_images_are_pinned(self):
        for name in self.DOCKERFILES:
            froms = [rest.split()[0] for op, rest in self.instructions(name) if op == "FROM"]
            self.assertEqual(len(froms), 2, name)
            for image in froms:
                self.assertIsNone(image_problem(image), name)

    def test_copied_files_exist_or_are_built(self):
        for name in self.DOCKERFILES:
            ins = self.instructions(name)
            build_runs = " ".join(rest for op, rest in ins if op == "RUN")
            for op, rest in ins:
                if op != "COPY":
                    continue
                words = rest.split()
                sources = words[:-1]
                if sources[0].startswith("--from="):
                    for src in sources[1:]:
                        # Produced by the build stage's RUN (install -t /out/bin,
                        # collect_libs.sh /out/lib).
                        self.assertIn(src.rstrip("/"), build_runs, "%s: COPY %s" % (name, src))
                else:
                    for src in sources:
                        self.assertTrue(os.path.exists(os.path.join(ROOT, src)),
                                        "%s: COPY %s" % (name, src))
            # Every file a RUN names in the repository exists; every Bazel
            # target it builds exists and is installed from bazel-bin.
            for path in re.findall(r"(?:\./)?((?:tools|deploy)/[\w/.-]+)", build_runs):
                self.assertTrue(os.path.exists(os.path.join(ROOT, path)), "%s: %s" % (name, path))
            # (The test's BUILD lists the same binaries as data.)
            for package, target in re.findall(r"//([\w/]+):([\w-]+)", build_runs):
                self.assertTrue(any(os.path.exists(os.path.join(ROOT, top, package, target))
                                    for top in ("", "bazel-bin")),
                                "%s: //%s:%s" % (name, package, target))
                self.assertIn("bazel-bin/%s/%s" % (package, target), build_runs, name)

    def test_runtime_stage_is_non_root_and_uses_the_entrypoint(self):
        for name in self.DOCKERFILES:
            ins = self.instructions(name)
            runtime = ins[[i for i, (op, _) in enumerate(ins) if op == "FROM"][-1]:]
            users = [rest for op, rest in runtime if op == "USER"]
            self.assertEqual(len(users), 1, name)
            self.assertNotIn(users[0].split(":")[0], ("0", "root"), name)
            self.assertIn('ENTRYPOINT ["/usr/local/bin/memserve-entrypoint"]',
                          ["%s %s" % (op, rest) for op, rest in runtime], name)
            with open(ENTRYPOINT) as f:
                known = set(re.findall(r"^\s*(MEMSERVE_\w+)=", f.read(), re.M))
            for op, rest in runtime:
                if op == "ENV":
                    for variable in re.findall(r"(MEMSERVE_\w+)=", rest):
                        self.assertIn(variable, known, "%s: ENV %s" % (name, variable))

    def test_collect_libs_gathers_what_memserve_loads(self):
        dest = os.path.join(harness.tmpdir("libs_"), "lib")
        r = subprocess.run([COLLECT_LIBS, dest, harness.memserve_binary()], capture_output=True,
                           text=True)
        self.assertEqual(r.returncode, 0, r.stderr)
        got = set(os.listdir(dest))
        self.assertTrue(any(n.startswith("libgrpc++.so") for n in got), got)
        self.assertTrue(any(n.startswith("libprotobuf.so") for n in got), got)
        for provided in ("libc.so.6", "libm.so.6", "libstdc++.so.6", "libgcc_s.so.1"):
            self.assertNotIn(provided, got)
        ldd = subprocess.run(["ldd", harness.memserve_binary()], capture_output=True, text=True,
                             check=True).stdout
        needed = set(re.findall(r"^\s*(\S+) => /", ldd, re.M))
        for lib in needed - got:
            self.assertRegex(lib, r"^(libc|libm|libmvec|libstdc\+\+|libgcc_s|libpthread|libdl|"
                             r"librt|libresolv|libcuda\w*|libcublas\w*|libnccl)\.so")

    def test_scripts_pass_shellcheck(self):
        shellcheck = shutil.which("shellcheck")
        if shellcheck is None:
            raise AssertionError("no shellcheck on PATH (tools/setup.sh installs it)")
        r = subprocess.run([shellcheck, ENTRYPOINT, COLLECT_LIBS], capture_output=True, text=True)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)


if __name__ == "__main__":
    harness.main()
