#!/usr/bin/env python3
"""The checks of scripts/k8s-check on the manifests it rendered (one YAML file per overlay).

Usage: k8s_policy.py --rendered DIR --overlays base,istio,... --compose docker-compose.yml --kubernetes 1.31.0
                     [--istio-schemas DIR --istio-release R | --istio-models DIR --istio-release R]
                     --planted-from OVERLAY --planted-dir DIR

For every rendered overlay:
  1. core kinds against Kubernetes' own schemas, kubernetes-validate in strict mode (an unknown
     field is an error);
  2. Istio kinds against JSON Schemas made from Istio's CRDs (scripts/istio_crd_schemas.py), or,
     without the CRD file, against the validators of the npm package @kubernetes-models/istio
     (types and enums only);
  3. what no schema says (policy): canary weights add up to 100, every subset a route names
     exists, STRICT mTLS in every namespace, probes / limits / a non-root user on every
     container, a NetworkPolicy for every Service, and the wiring between objects (selectors,
     ports, service accounts, config and secret references, principals);
then that the manifests and docker-compose.yml agree (services, ports, variable names), and last
that each planted error is caught. Prints `k8s-check: ok ...` / `k8s-check: FAILED ...`; exits 1
on any failure.
"""
import argparse
import copy
import json
import os
import subprocess
import sys

import kubernetes_validate
import yaml

FAILURES = []


def ok(message):
    print(f"k8s-check: ok {message}")


def failed(message):
    FAILURES.append(message)
    print(f"k8s-check: FAILED {message}")


def load(path):
    with open(path) as f:
        return [d for d in yaml.safe_load_all(f) if d]


def name_of(obj):
    meta = obj.get("metadata", {})
    return f"{obj.get('kind')} {meta.get('namespace', '-')}/{meta.get('name')}"


def group_of(obj):
    api = obj.get("apiVersion", "")
    return api.split("/")[0] if "/" in api else ""


def is_istio(obj):
    return group_of(obj).endswith(".istio.io")


# ---------------------------------------------------------------------------------------------
# 1 and 2: schemas


class Schemas:
    """The schema validators, with each distinct object validated once (the overlays share most
    objects, and a planted error changes one)."""

    def __init__(self, kubernetes, istio_schemas=None, istio_models=None):
        self.kubernetes = kubernetes
        self.istio_schemas = istio_schemas
        self.istio_models = istio_models
        self.cache = {}

    def core(self, objects):
        """(object, message) for each core object kubernetes-validate --strict rejects."""
        errors = []
        for obj in objects:
            if is_istio(obj):
                continue
            key = ("core", json.dumps(obj, sort_keys=True))
            if key not in self.cache:
                try:
                    kubernetes_validate.validate(obj, self.kubernetes, strict=True)
                    self.cache[key] = None
                except kubernetes_validate.SchemaNotFoundError:
                    self.cache[key] = "unknown"
                except kubernetes_validate.ValidationError as e:
                    where = "/".join(str(p) for p in e.absolute_path)
                    self.cache[key] = f"{where}: {e.message}"
            result = self.cache[key]
            if result and result != "unknown":
                errors.append((obj, result))
        return errors

    def unknown_kinds(self, objects):
        """Non-Istio kinds kubernetes-validate has no schema for (the ServiceMonitor)."""
        return sorted({f"{o['apiVersion']} {o['kind']}" for o in objects if not is_istio(o)
                       and self.cache.get(("core", json.dumps(o, sort_keys=True))) == "unknown"})

    def istio(self, objects):
        """(object, message) for each Istio object its schema rejects."""
        objects = [o for o in objects if is_istio(o)]
        if self.istio_schemas:
            return self._istio_json_schemas(objects)
        if self.istio_models:
            return self._istio_models(objects)
        return []

    def _istio_json_schemas(self, objects):
        import jsonschema

        errors = []
        for obj in objects:
            group, version = obj["apiVersion"].split("/")
            path = os.path.join(self.istio_schemas, f"{group}_{version}_{obj['kind']}.json")
            if not os.path.exists(path):
                errors.append((obj, f"no schema for {obj['apiVersion']} {obj['kind']} in Istio's CRDs"))
                continue
            key = ("istio", path)
            if key not in self.cache:
                with open(path) as f:
                    self.cache[key] = jsonschema.Draft7Validator(json.load(f))
            for e in sorted(self.cache[key].iter_errors(obj), key=lambda e: list(e.absolute_path)):
                where = "/".join(str(p) for p in e.absolute_path)
                errors.append((obj, f"{where}: {e.message}"))
        return errors

    def _istio_models(self, objects):
        script = os.path.join(os.path.dirname(os.path.abspath(__file__)), "k8s_istio_models.mjs")
        run = subprocess.run(["node", script, self.istio_models], input=json.dumps(objects),
                             capture_output=True, text=True, check=False)
        if run.returncode != 0:
            return [(o, f"the @kubernetes-models/istio validators did not run: {run.stderr.strip()}")
                    for o in objects]
        return [(o, message) for o, messages in zip(objects, json.loads(run.stdout))
                for message in messages]


# ---------------------------------------------------------------------------------------------
# 3: policy


def selects(selector, labels):
    """Whether a label selector (a Service's plain map, or matchLabels/matchExpressions) selects
    these labels. An empty selector selects everything."""
    if selector is None:
        return False
    if "matchLabels" not in selector and "matchExpressions" not in selector:
        selector = {"matchLabels": selector}
    for key, value in (selector.get("matchLabels") or {}).items():
        if labels.get(key) != value:
            return False
    for expr in selector.get("matchExpressions") or []:
        key, op, values = expr["key"], expr["operator"], expr.get("values", [])
        if op == "In" and labels.get(key) not in values:
            return False
        if op == "NotIn" and labels.get(key) in values:
            return False
        if op == "Exists" and key not in labels:
            return False
        if op == "DoesNotExist" and key in labels:
            return False
    return True


WORKLOADS = {"Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job", "CronJob"}
LONG_RUNNING = {"Deployment", "StatefulSet", "DaemonSet", "ReplicaSet"}


def pod_template(obj):
    if obj["kind"] == "CronJob":
        return obj["spec"]["jobTemplate"]["spec"]["template"]
    return obj["spec"]["template"]


def workloads(objects):
    return [o for o in objects if o["kind"] in WORKLOADS]


def namespace(obj):
    return obj["metadata"].get("namespace", "default")


def fqdn(host, ns):
    parts = host.split(".")
    if len(parts) == 1:
        return f"{host}.{ns}.svc.cluster.local"
    if len(parts) == 2:
        return f"{host}.svc.cluster.local"
    return host


def check_weights(objects):
    errors = []
    for vs in (o for o in objects if o["kind"] == "VirtualService"):
        spec = vs.get("spec", {})
        for proto in ("http", "tcp", "tls"):
            for i, rule in enumerate(spec.get(proto) or []):
                route = rule.get("route") or []
                if len(route) < 2 and not any("weight" in r for r in route):
                    continue
                weights = [r.get("weight", 0) for r in route]
                where = f"{name_of(vs)} {proto}[{i}] ({rule.get('name', 'unnamed')})"
                if not all(isinstance(w, int) and 0 <= w <= 100 for w in weights):
                    errors.append(f"{where}: weights {weights} are not all whole numbers 0-100")
                elif sum(weights) != 100:
                    errors.append(f"{where}: weights {'/'.join(map(str, weights))} add up to {sum(weights)}, not 100")
    return errors


def check_routes(objects):
    """Every subset a VirtualService names exists in a DestinationRule for that host; every
    destination is a Service and port of the render; every gateway and delegate exists."""
    errors = []
    subsets = {}
    for dr in (o for o in objects if o["kind"] == "DestinationRule"):
        host = fqdn(dr["spec"]["host"], namespace(dr))
        subsets.setdefault(host, set()).update(s["name"] for s in dr["spec"].get("subsets") or [])
    services = {f"{o['metadata']['name']}.{namespace(o)}.svc.cluster.local": o
                for o in objects if o["kind"] == "Service"}
    gateways = {(namespace(o), o["metadata"]["name"]) for o in objects if o["kind"] == "Gateway"}
    virtual_services = {(namespace(o), o["metadata"]["name"]): o
                        for o in objects if o["kind"] == "VirtualService"}
    for vs in virtual_services.values():
        ns, spec = namespace(vs), vs.get("spec", {})
        for gw in spec.get("gateways") or []:
            key = tuple(gw.split("/", 1)) if "/" in gw else (ns, gw)
            if gw != "mesh" and key not in gateways:
                errors.append(f"{name_of(vs)}: gateway {gw} is not in the render")
        for proto in ("http", "tcp", "tls"):
            for rule in spec.get(proto) or []:
                delegate = rule.get("delegate")
                if delegate:
                    target = virtual_services.get((delegate.get("namespace", ns), delegate["name"]))
                    if target is None:
                        errors.append(f"{name_of(vs)}: delegate {delegate} is not in the render")
                    elif target["spec"].get("hosts") or target["spec"].get("gateways"):
                        errors.append(f"{name_of(vs)}: delegate {name_of(target)} must have no hosts or gateways")
                for r in rule.get("route") or []:
                    dest = r["destination"]
                    host = fqdn(dest["host"], ns)
                    subset = dest.get("subset")
                    if subset and subset not in subsets.get(host, set()):
                        errors.append(f"{name_of(vs)}: subset {subset} of {host} is in no DestinationRule "
                                      f"(known: {sorted(subsets.get(host, set())) or 'none'})")
                    service = services.get(host)
                    if host.endswith(".svc.cluster.local") and service is None:
                        errors.append(f"{name_of(vs)}: destination {host} is not a Service of the render")
                    elif service and "port" in dest:
                        ports = [p["port"] for p in service["spec"]["ports"]]
                        if dest["port"]["number"] not in ports:
                            errors.append(f"{name_of(vs)}: {host} has no port {dest['port']['number']} (ports {ports})")
    return errors


def check_mtls(objects):
    """With Istio in the render, every namespace has a namespace-wide STRICT PeerAuthentication,
    none weakens it, and sidecar injection is on."""
    if not any(is_istio(o) for o in objects):
        return []
    errors = []
    namespaces = {o["metadata"]["name"] for o in objects if o["kind"] == "Namespace"}
    namespaces |= {namespace(o) for o in objects if o["kind"] != "Namespace"}
    pas = [o for o in objects if o["kind"] == "PeerAuthentication"]
    for ns in sorted(namespaces):
        wide = [p for p in pas if namespace(p) == ns and not p.get("spec", {}).get("selector")]
        if not any((p.get("spec", {}).get("mtls") or {}).get("mode") == "STRICT" for p in wide):
            modes = [(p.get("spec", {}).get("mtls") or {}).get("mode") for p in wide]
            errors.append(f"namespace {ns}: no namespace-wide PeerAuthentication with mtls.mode STRICT (found {modes or 'none'})")
        for p in (p for p in pas if namespace(p) == ns):
            spec = p.get("spec", {})
            modes = [(spec.get("mtls") or {}).get("mode", "STRICT")]
            modes += [(v or {}).get("mode") for v in (spec.get("portLevelMtls") or {}).values()]
            if any(m not in ("STRICT", "UNSET", None) for m in modes):
                errors.append(f"{name_of(p)}: mode {modes} weakens STRICT mTLS")
    for ns_obj in (o for o in objects if o["kind"] == "Namespace"):
        if (ns_obj["metadata"].get("labels") or {}).get("istio-injection") != "enabled":
            errors.append(f"{name_of(ns_obj)}: not labelled istio-injection: enabled")
    return errors


def effective(container, pod, key):
    value = (container.get("securityContext") or {}).get(key)
    return value if value is not None else (pod.get("securityContext") or {}).get(key)


def check_containers(objects):
    errors = []
    for w in workloads(objects):
        pod = pod_template(w)["spec"]
        all_containers = [(c, False) for c in pod.get("initContainers") or []]
        all_containers += [(c, True) for c in pod["containers"]]
        for c, main in all_containers:
            where = f"{name_of(w)} container {c['name']}"
            res = c.get("resources") or {}
            for kind in ("limits", "requests"):
                missing = [r for r in ("cpu", "memory") if r not in (res.get(kind) or {})]
                if missing:
                    errors.append(f"{where}: no {kind} for {', '.join(missing)}")
            user = effective(c, pod, "runAsUser")
            if effective(c, pod, "runAsNonRoot") is not True or user in (None, 0):
                errors.append(f"{where}: not a non-root user (runAsNonRoot true and a runAsUser other than 0)")
            sc = c.get("securityContext") or {}
            if sc.get("readOnlyRootFilesystem") is not True:
                errors.append(f"{where}: root filesystem not read-only")
            if sc.get("allowPrivilegeEscalation") is not False:
                errors.append(f"{where}: allowPrivilegeEscalation is not false")
            if "ALL" not in ((sc.get("capabilities") or {}).get("drop") or []):
                errors.append(f"{where}: capabilities do not drop ALL")
            seccomp = effective(c, pod, "seccompProfile") or {}
            if seccomp.get("type") not in ("RuntimeDefault", "Localhost"):
                errors.append(f"{where}: no RuntimeDefault seccomp profile")
            if main and w["kind"] in LONG_RUNNING:
                port_names = {p.get("name") for p in c.get("ports") or []}
                port_numbers = {p["containerPort"] for p in c.get("ports") or []}
                for probe in ("livenessProbe", "readinessProbe"):
                    if probe not in c:
                        errors.append(f"{where}: no {probe}")
                        continue
                    action = c[probe].get("httpGet") or c[probe].get("tcpSocket") or {}
                    port = action.get("port")
                    if port is not None and port not in port_names and port not in port_numbers:
                        errors.append(f"{where}: {probe} port {port} is not a port of the container")
    return errors


def check_app_containers(objects):
    """The app's own pods: /health and /ready probes, the scrape annotations on the right port."""
    errors = []
    for w in workloads(objects):
        template = pod_template(w)
        for c in template["spec"]["containers"]:
            if not c.get("image", "").split(":")[0].endswith("eventflow-commerce") or w["kind"] not in LONG_RUNNING:
                continue
            where = f"{name_of(w)} container {c['name']}"
            for probe, path in (("livenessProbe", "/health"), ("readinessProbe", "/ready")):
                got = ((c.get(probe) or {}).get("httpGet") or {}).get("path")
                if got != path:
                    errors.append(f"{where}: {probe} is GET {got}, not GET {path}")
            annotations = template["metadata"].get("annotations") or {}
            ports = [str(p["containerPort"]) for p in c.get("ports") or [] if p.get("name") == "http"]
            wanted = {"prometheus.io/scrape": "true", "prometheus.io/path": "/metrics",
                      "prometheus.io/port": ports[0] if ports else "?"}
            for key, value in wanted.items():
                if annotations.get(key) != value:
                    errors.append(f"{where}: annotation {key} is {annotations.get(key)!r}, not {value!r}")
            if "APP_VERSION" not in {e["name"] for e in c.get("env") or []}:
                errors.append(f"{where}: no APP_VERSION (the x-app-version header)")
            elif (template["metadata"].get("labels") or {}).get("version") != \
                    next(e.get("value") for e in c["env"] if e["name"] == "APP_VERSION"):
                errors.append(f"{where}: APP_VERSION differs from the pod's version label")
    return errors


def pods_of(service, objects):
    return [pod_template(w) for w in workloads(objects)
            if namespace(w) == namespace(service)
            and selects(service["spec"].get("selector"), pod_template(w)["metadata"].get("labels") or {})]


def check_network_policies(objects):
    """A default deny in each namespace, and each Service's pods selected by a NetworkPolicy of
    their own (not only the default deny) that admits ingress."""
    errors = []
    nps = [o for o in objects if o["kind"] == "NetworkPolicy"]
    namespaces = {namespace(o) for o in objects if o["kind"] in WORKLOADS | {"Service"}}
    for ns in sorted(namespaces):
        deny = [p for p in nps if namespace(p) == ns and p["spec"].get("podSelector") == {}
                and set(p["spec"].get("policyTypes") or []) >= {"Ingress", "Egress"}
                and not p["spec"].get("ingress") and not p["spec"].get("egress")]
        if not deny:
            errors.append(f"namespace {ns}: no default-deny NetworkPolicy (empty podSelector, Ingress and Egress, no rules)")
    for svc in (o for o in objects if o["kind"] == "Service"):
        pods = pods_of(svc, objects)
        own = [p for p in nps if namespace(p) == namespace(svc) and p["spec"].get("podSelector")
               and "Ingress" in (p["spec"].get("policyTypes") or [])
               and pods and all(selects(p["spec"]["podSelector"], t["metadata"].get("labels") or {}) for t in pods)]
        if not own:
            errors.append(f"{name_of(svc)}: selected by no NetworkPolicy of its own")
    return errors


def check_wiring(objects):
    """References between objects resolve: Service -> pods and named ports, workload -> service
    account, ConfigMap and Secret; HPA -> Deployment (without replicas); PDB -> pods;
    AuthorizationPolicy -> workloads and known principals; ServiceMonitor -> Services."""
    errors = []
    index = {(o["kind"], namespace(o), o["metadata"]["name"]) for o in objects}
    external_secrets = {"eventflow-jwt"}  # made in the cluster (deploy README), not rendered
    for svc in (o for o in objects if o["kind"] == "Service"):
        pods = pods_of(svc, objects)
        if not pods:
            errors.append(f"{name_of(svc)}: its selector matches no pod template")
        for port in svc["spec"]["ports"]:
            target = port.get("targetPort", port["port"])
            for t in pods:
                declared = [(p.get("name"), p["containerPort"]) for c in t["spec"]["containers"] for p in c.get("ports") or []]
                if not any(target in pair for pair in declared):
                    errors.append(f"{name_of(svc)}: targetPort {target} is no container port of its pods")
    for w in workloads(objects):
        ns, spec = namespace(w), pod_template(w)["spec"]
        sa = spec.get("serviceAccountName")
        if sa and ("ServiceAccount", ns, sa) not in index:
            errors.append(f"{name_of(w)}: service account {sa} is not in the render")
        for c in spec["containers"] + (spec.get("initContainers") or []):
            for src in c.get("envFrom") or []:
                ref = src.get("configMapRef") or src.get("secretRef")
                kind = "ConfigMap" if "configMapRef" in src else "Secret"
                if (kind, ns, ref["name"]) not in index:
                    errors.append(f"{name_of(w)}: {kind} {ref['name']} is not in the render")
            for env in c.get("env") or []:
                ref = (env.get("valueFrom") or {}).get("secretKeyRef")
                if ref and ("Secret", ns, ref["name"]) not in index and ref["name"] not in external_secrets:
                    errors.append(f"{name_of(w)}: Secret {ref['name']} is neither in the render nor a documented external one")
    deployments = {(namespace(o), o["metadata"]["name"]): o for o in objects if o["kind"] == "Deployment"}
    for hpa in (o for o in objects if o["kind"] == "HorizontalPodAutoscaler"):
        target = deployments.get((namespace(hpa), hpa["spec"]["scaleTargetRef"]["name"]))
        if target is None:
            errors.append(f"{name_of(hpa)}: scales {hpa['spec']['scaleTargetRef']['name']}, not in the render")
        elif "replicas" in target["spec"]:
            errors.append(f"{name_of(target)}: sets replicas, which fights its HorizontalPodAutoscaler on every apply")
    for pdb in (o for o in objects if o["kind"] == "PodDisruptionBudget"):
        if not any(selects(pdb["spec"]["selector"], pod_template(w)["metadata"].get("labels") or {})
                   for w in workloads(objects) if namespace(w) == namespace(pdb)):
            errors.append(f"{name_of(pdb)}: selects no pods")
    mesh_namespaces = {namespace(o) for o in objects if is_istio(o)}
    for ap in (o for o in objects if o["kind"] == "AuthorizationPolicy"):
        spec = ap.get("spec") or {}
        if spec.get("selector") and not any(
                selects(spec["selector"], pod_template(w)["metadata"].get("labels") or {})
                for w in workloads(objects) if namespace(w) == namespace(ap)):
            errors.append(f"{name_of(ap)}: selects no workload")
        for rule in spec.get("rules") or []:
            for source in rule.get("from") or []:
                for principal in (source.get("source") or {}).get("principals") or []:
                    parts = principal.split("/")
                    if len(parts) != 5 or parts[1] != "ns" or parts[3] != "sa":
                        errors.append(f"{name_of(ap)}: principal {principal} is not <trust domain>/ns/<ns>/sa/<account>")
                    elif parts[2] in mesh_namespaces and ("ServiceAccount", parts[2], parts[4]) not in index:
                        errors.append(f"{name_of(ap)}: principal {principal}: no such service account in the render")
                    elif parts[2] not in mesh_namespaces and principal != \
                            "cluster.local/ns/istio-system/sa/istio-ingressgateway-service-account":
                        errors.append(f"{name_of(ap)}: principal {principal} is outside the app and not the ingress gateway")
    for ns in sorted(mesh_namespaces):
        if not any(o["kind"] == "AuthorizationPolicy" and namespace(o) == ns and not o.get("spec")
                   for o in objects):
            errors.append(f"namespace {ns}: no allow-nothing AuthorizationPolicy (spec {{}}): unlisted callers are let in")
    for sm in (o for o in objects if o["kind"] == "ServiceMonitor"):
        chosen = [s for s in objects if s["kind"] == "Service"
                  and namespace(s) in (sm["spec"].get("namespaceSelector") or {}).get("matchNames", [namespace(sm)])
                  and selects(sm["spec"]["selector"], s["metadata"].get("labels") or {})]
        if not chosen:
            errors.append(f"{name_of(sm)}: selects no Service")
        for endpoint in sm["spec"].get("endpoints") or []:
            for s in chosen:
                if endpoint.get("port") not in [p.get("name") for p in s["spec"]["ports"]]:
                    errors.append(f"{name_of(sm)}: {name_of(s)} has no port named {endpoint.get('port')}")
    return errors


POLICIES = [
    ("canary weights", check_weights),
    ("routes and subsets", check_routes),
    ("mTLS", check_mtls),
    ("containers", check_containers),
    ("app containers", check_app_containers),
    ("network policies", check_network_policies),
    ("wiring", check_wiring),
]




# ---------------------------------------------------------------------------------------------
# docker-compose.yml in step


# Set in docker-compose.yml only because it runs on emulators: the AWS overlays use the pods'
# identity and AWS's own endpoints.
EMULATOR_ONLY = {"AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_DYNAMODB", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"}
# Set in the manifests only, each for a reason the compose file does not have.
KUBERNETES_ONLY = {
    "APP_VERSION": "the canary's x-app-version header",
    "EVENTFLOW_PROVISION": "false on AWS, where `provision` runs once with its own role",
    "LOG_FORMAT": "json, as the Dockerfile sets it",
    "PUBSUB_PROJECT_ID": "the local Pub/Sub emulator, ready for EVENT_BUS_ADAPTER=pubsub",
    "PUBSUB_EMULATOR_HOST": "likewise",
}


def compose_services(path):
    with open(path) as f:
        compose = yaml.safe_load(f)
    services = {}
    for name, svc in compose["services"].items():
        command = svc.get("command") or []
        if isinstance(command, list) and command[:1] == ["serve"]:
            ports = {int(str(p).split(":")[-1]) for p in svc.get("ports") or []}
            services[command[1]] = {"name": name, "ports": ports, "env": set((svc.get("environment") or {}).keys()),
                                    "image": svc.get("image")}
    return services


def manifest_services(objects):
    config_maps = {(namespace(o), o["metadata"]["name"]): o for o in objects if o["kind"] == "ConfigMap"}
    services = {(namespace(o), o["metadata"]["name"]): o for o in objects if o["kind"] == "Service"}
    found = {}
    for w in (o for o in objects if o["kind"] == "Deployment"):
        template = pod_template(w)
        for c in template["spec"]["containers"]:
            args = c.get("args") or []
            if args[:1] != ["serve"]:
                continue
            env = {e["name"] for e in c.get("env") or []}
            for src in c.get("envFrom") or []:
                if "configMapRef" in src:
                    cm = config_maps.get((namespace(w), src["configMapRef"]["name"]))
                    env |= set((cm or {}).get("data", {}).keys())
            svc = services.get((namespace(w), args[1]))
            entry = found.setdefault(args[1], {"env": set(), "container_ports": set(), "image": c["image"].split(":")[0],
                                               "service_ports": {p["port"] for p in svc["spec"]["ports"]} if svc else set()})
            entry["env"] |= env
            entry["container_ports"] |= {p["containerPort"] for p in c.get("ports") or []}
    return found


def check_compose(objects, compose, emulators):
    errors = []
    manifest = manifest_services(objects)
    if set(manifest) != set(compose):
        errors.append(f"services differ: only in the manifests {sorted(set(manifest) - set(compose))}, "
                      f"only in docker-compose.yml {sorted(set(compose) - set(manifest))}")
    for name in sorted(set(manifest) & set(compose)):
        m, c = manifest[name], compose[name]
        if not (m["service_ports"] == m["container_ports"] == c["ports"]):
            errors.append(f"{name}: ports differ: Service {sorted(m['service_ports'])}, container "
                          f"{sorted(m['container_ports'])}, docker-compose.yml {sorted(c['ports'])}")
        if m["image"] != c["image"]:
            errors.append(f"{name}: image {m['image']} in the manifests, {c['image']} in docker-compose.yml")
        wanted = c["env"] - set(KUBERNETES_ONLY) - (set() if emulators else EMULATOR_ONLY)
        got = m["env"] - set(KUBERNETES_ONLY)
        if wanted != got:
            errors.append(f"{name}: variables differ: only in the manifests {sorted(got - wanted)}, "
                          f"only in docker-compose.yml {sorted(wanted - got)}")
    return errors


def validate(objects, schemas, compose, emulators):
    """Every finding on a render, as (check, message)."""
    found = [("kubernetes-validate", f"{name_of(o)}: {m}") for o, m in schemas.core(objects)]
    found += [("istio-schema", f"{name_of(o)}: {m}") for o, m in schemas.istio(objects)]
    for check, run in POLICIES:
        found += [(f"policy ({check})", m) for m in run(objects)]
    found += [("docker-compose.yml in step", m) for m in check_compose(objects, compose, emulators)]
    return found


# ---------------------------------------------------------------------------------------------
# planted errors


def find(objects, kind, name):
    return next(o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name)


def plant_misspelt_field(objects):
    c = pod_template(find(objects, "Deployment", "identity"))["spec"]["containers"][0]
    c["imagePulPolicy"] = c.pop("imagePullPolicy")
    return "Deployment identity: imagePullPolicy spelt imagePulPolicy"


def plant_wrong_type(objects):
    c = pod_template(find(objects, "Deployment", "catalog"))["spec"]["containers"][0]
    c["ports"][0]["containerPort"] = "3002"
    return "Deployment catalog: containerPort the string \"3002\""


def plant_weights(objects):
    route = find(objects, "VirtualService", "ordering")["spec"]["http"][0]["route"]
    route[0]["weight"], route[1]["weight"] = 95, 10
    return "VirtualService ordering: weights 95/10"


def plant_missing_subset(objects):
    dr = find(objects, "DestinationRule", "ordering")
    dr["spec"]["subsets"] = [s for s in dr["spec"]["subsets"] if s["name"] != "v2"]
    return "DestinationRule ordering: subset v2 removed"


def plant_stricter(objects):
    find(objects, "PeerAuthentication", "default")["spec"]["mtls"]["mode"] = "STRICTER"
    return "PeerAuthentication default: mode STRICTER"


def plant_istio_misspelt_field(objects):
    od = find(objects, "DestinationRule", "ordering")["spec"]["trafficPolicy"]["outlierDetection"]
    od["consecutive5xxError"] = od.pop("consecutive5xxErrors")
    return "DestinationRule ordering: consecutive5xxErrors spelt consecutive5xxError"


def plant_istio_wrong_type(objects):
    find(objects, "VirtualService", "ordering")["spec"]["http"][0]["retries"]["attempts"] = "two"
    return "VirtualService ordering: retries.attempts the string \"two\""


def plant_network_policy(objects):
    objects[:] = [o for o in objects if not (o["kind"] == "NetworkPolicy" and o["metadata"]["name"] == "saga")]
    return "NetworkPolicy saga removed"


def plant_variable(objects):
    data = find(objects, "ConfigMap", "eventflow-config")["data"]
    data["EVENTBUS_NAME"] = data.pop("EVENT_BUS_NAME")
    return "ConfigMap eventflow-config: EVENT_BUS_NAME spelt EVENTBUS_NAME"


def plant_port(objects):
    find(objects, "Service", "catalog")["spec"]["ports"][0]["port"] = 3012
    return "Service catalog: port 3012"


def plant_probe(objects):
    del pod_template(find(objects, "Deployment", "payment"))["spec"]["containers"][0]["readinessProbe"]
    return "Deployment payment: no readinessProbe"


def plant_root(objects):
    c = pod_template(find(objects, "Deployment", "shipping"))["spec"]["containers"][0]
    c["securityContext"]["runAsUser"] = 0
    return "Deployment shipping: runAsUser 0"


# (name, plant, the check that must catch it, whether it needs the strict Istio schemas)
PLANTED = [
    ("misspelt field", plant_misspelt_field, "kubernetes-validate", False),
    ("wrong type", plant_wrong_type, "kubernetes-validate", False),
    ("weights 95/10", plant_weights, "policy (canary weights)", False),
    ("missing subset", plant_missing_subset, "policy (routes and subsets)", False),
    ("mode STRICTER", plant_stricter, "istio-schema", False),
    ("misspelt Istio field", plant_istio_misspelt_field, "istio-schema", True),
    ("wrong Istio type", plant_istio_wrong_type, "istio-schema", False),
    ("Service without NetworkPolicy", plant_network_policy, "policy (network policies)", False),
    ("variable out of step", plant_variable, "docker-compose.yml in step", False),
    ("port out of step", plant_port, "docker-compose.yml in step", False),
    ("no readiness probe", plant_probe, "policy (containers)", False),
    ("root user", plant_root, "policy (containers)", False),
]


def run_planted(objects, schemas, compose, out_dir, strict_istio, istio_checked):
    os.makedirs(out_dir, exist_ok=True)
    for name, plant, catcher, needs_strict in PLANTED:
        if catcher == "istio-schema" and not istio_checked:
            catcher = "policy (mTLS)" if name == "mode STRICTER" else None
        if catcher is None or (needs_strict and not strict_istio):
            print(f"k8s-check: NOT CHECKED planted {name}: needs Istio's CRD file (see the deploy README)")
            continue
        copy_ = copy.deepcopy(objects)
        what = plant(copy_)
        path = os.path.join(out_dir, name.replace(" ", "-").replace("/", "-") + ".yaml")
        with open(path, "w") as f:
            yaml.safe_dump_all(copy_, f, sort_keys=False)
        found = validate(load(path), schemas, compose, emulators=False)
        by = [m for check, m in found if check == catcher]
        if by:
            ok(f"planted {name} ({what}) is caught by {catcher}: {by[0]}")
        else:
            failed(f"planted {name} ({what}) passed {catcher}"
                   + (f" (other findings: {[c for c, _ in found]})" if found else ""))


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rendered", required=True, help="a directory of <overlay>.yaml renders")
    parser.add_argument("--overlays", required=True, help="the renders to check, in order, comma-separated")
    parser.add_argument("--compose", required=True)
    parser.add_argument("--kubernetes", required=True, help="the Kubernetes version to validate against")
    parser.add_argument("--istio-schemas", help="JSON Schemas from Istio's CRDs (istio_crd_schemas.py)")
    parser.add_argument("--istio-models", help="the @kubernetes-models/istio package directory")
    parser.add_argument("--istio-release", default="?")
    parser.add_argument("--planted-from", required=True, help="the overlay the planted errors go into")
    parser.add_argument("--planted-dir", required=True)
    parser.add_argument("--emulator-overlays", default="local-emulators",
                        help="overlays that run on emulators, compared with all of docker-compose.yml's variables")
    args = parser.parse_args()

    schemas = Schemas(args.kubernetes, args.istio_schemas, args.istio_models)
    istio_how = (f"JSON Schemas from Istio {args.istio_release}'s CRDs, unknown fields rejected" if args.istio_schemas
                 else f"@kubernetes-models/istio validators of Istio {args.istio_release}'s CRDs: types and enums, "
                      "unknown fields NOT CHECKED" if args.istio_models else None)
    compose = compose_services(args.compose)
    emulator_overlays = set(args.emulator_overlays.split(","))
    for overlay in args.overlays.split(","):
        objects = load(os.path.join(args.rendered, f"{overlay}.yaml"))
        found = validate(objects, schemas, compose, overlay in emulator_overlays)
        for check, message in found:
            failed(f"{check} [{overlay}] {message}")
        checks = {c for c, _ in found}
        core = [o for o in objects if not is_istio(o)]
        istio = [o for o in objects if is_istio(o)]
        if "kubernetes-validate" not in checks:
            ok(f"[{overlay}] kubernetes-validate --strict, Kubernetes {args.kubernetes}: {len(core)} objects")
        unknown = schemas.unknown_kinds(objects)
        if unknown:
            print(f"k8s-check: NOT CHECKED by a schema [{overlay}]: {', '.join(unknown)} "
                  "(no schema here; the wiring policy checks its references)")
        if istio and not istio_how:
            print(f"k8s-check: NOT CHECKED [{overlay}] Istio schemas: neither Istio's CRD file nor node "
                  "for @kubernetes-models/istio")
        elif istio and "istio-schema" not in checks:
            ok(f"[{overlay}] Istio schemas ({istio_how}): {len(istio)} objects")
        passed = [c for c, _ in POLICIES if f"policy ({c})" not in checks]
        if passed:
            ok(f"[{overlay}] policy: {', '.join(passed)}" + ("" if istio else " (no mesh objects here)"))
        if "docker-compose.yml in step" not in checks:
            which = "all variables" if overlay in emulator_overlays else "variables less the emulator-only ones"
            ok(f"[{overlay}] docker-compose.yml in step: {len(compose)} services, their ports, {which}")

    run_planted(load(os.path.join(args.rendered, f"{args.planted_from}.yaml")), schemas, compose, args.planted_dir,
                strict_istio=bool(args.istio_schemas), istio_checked=bool(istio_how))
    if FAILURES:
        print(f"k8s-check: {len(FAILURES)} FAILED")
        sys.exit(1)


if __name__ == "__main__":
    main()
