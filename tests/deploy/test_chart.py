"""The Helm chart deploy/helm/paystream, checked offline.

- `helm lint` with the default and the production values;
- `helm template` with both, and with the no-KEDA switch (workers.autoscaling.mode=external);
- every rendered object validated strictly (unknown fields rejected) against the bundled
  Kubernetes schemas of kubernetes-validate, for each version in deploy/helm/versions.env;
- every ScaledObject validated against the openAPIV3Schema of KEDA's CRD (from the
  github.com/kedacore/keda/v2 Go module), with unknown fields rejected, and its kafka
  trigger's metadata keys checked against the names the KEDA kafka scaler reads;
- the content: probes, resources, PDBs, graceful termination, autoscaling on the real
  consumer groups and topics, the hook Jobs, and only real options of the binary.

Tools: helm (PAYSTREAM_HELM, build/tools/helm or PATH), go (for the module cache), the
Python packages kubernetes-validate and jsonschema. scripts/install-deps.sh installs them.
"""
import copy
import json
import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "deploy" / "helm" / "paystream"
PROD_VALUES = CHART / "values-production.yaml"
VERSIONS_FILE = ROOT / "deploy" / "helm" / "versions.env"

STAGES = {  # stage -> topics it consumes (src/app/distributed.cpp, the StageRunner calls)
    "fraud": ["tx.initiated"],
    "processor": ["tx.validated"],
    "ledger": ["tx.settled", "tx.failed"],
    "notifier": ["tx.settled", "tx.failed"],
}
ALL_TOPICS = ["tx.initiated", "tx.validated", "tx.settled", "tx.failed", "tx.dlq"]
WORKER_FLUSH_S = 10  # a worker flushes its Kafka producer for at most 10 s (the default of --shutdown-timeout-ms, not a worker option)


def versions():
    out = {}
    for line in VERSIONS_FILE.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            k, v = line.split("=", 1)
            out[k] = v.strip().strip('"')
    return out


VERSIONS = versions()


def helm_bin():
    for cand in (os.environ.get("PAYSTREAM_HELM"), str(ROOT / "build" / "tools" / "helm"), shutil.which("helm")):
        if cand and os.access(cand, os.X_OK):
            return cand
    pytest.fail("helm not found (PAYSTREAM_HELM, build/tools/helm or PATH): run scripts/install-deps.sh")


def helm_run(*args) -> subprocess.CompletedProcess:
    env = dict(os.environ, HELM_CACHE_HOME=tempfile.gettempdir() + "/paystream-helm-cache",
               HELM_CONFIG_HOME=tempfile.gettempdir() + "/paystream-helm-config",
               HELM_DATA_HOME=tempfile.gettempdir() + "/paystream-helm-data")
    return subprocess.run([helm_bin(), *args], capture_output=True, text=True, env=env, timeout=120)


def helm(*args):
    r = helm_run(*args)
    assert r.returncode == 0, f"helm {' '.join(args)} failed:\n{r.stdout}\n{r.stderr}"
    return r.stdout


def render(*extra):
    out = helm("template", "ps", str(CHART), "--namespace", "payments",
               "--kube-version", VERSIONS["KUBERNETES_VERSIONS"].split()[-1], *extra)
    objs = [o for o in yaml.safe_load_all(out) if o]
    assert objs, "helm template rendered nothing"
    return objs


RENDERS = {
    "default": [],
    "production": ["-f", str(PROD_VALUES)],
    "no-keda": ["--set", "workers.autoscaling.mode=external"],
    "production-no-keda": ["-f", str(PROD_VALUES), "--set", "workers.autoscaling.mode=external"],
}


@pytest.fixture(scope="module", params=list(RENDERS))
def rendered(request):
    return request.param, render(*RENDERS[request.param])


def of_kind(objs, kind):
    return [o for o in objs if o["kind"] == kind]


def by_name(objs, kind):
    return {o["metadata"]["name"]: o for o in of_kind(objs, kind)}


def expected_roles(name):
    roles = ["gateway"] + [f"worker-{s}" for s in STAGES]
    if not name.startswith("production"):
        roles.append("acquirer-sim")
    return roles


def deployment(objs, role):
    d = by_name(objs, "Deployment").get(f"ps-paystream-{role}")
    assert d is not None, f"no Deployment for {role}"
    return d


def container(d):
    cs = d["spec"]["template"]["spec"]["containers"]
    assert len(cs) == 1
    return cs[0]


def flag(args, name, default=None):
    return args[args.index(name) + 1] if name in args else default


def annotations(o):
    return o["metadata"].get("annotations") or {}


# --- helm lint -------------------------------------------------------------------------

@pytest.mark.parametrize("values", [[], ["-f", str(PROD_VALUES)]], ids=["default", "production"])
def test_helm_lint(values):
    out = helm("lint", "--strict", str(CHART), *values)
    assert "0 chart(s) failed" in out


# --- schemas ---------------------------------------------------------------------------

def test_every_object_valid_against_kubernetes_schemas_strict(rendered):
    import kubernetes_validate
    from importlib.metadata import version
    assert version("kubernetes-validate") == VERSIONS["KUBERNETES_VALIDATE_VERSION"]
    name, objs = rendered
    crd_kinds = {"ScaledObject"}
    checked = 0
    for k8s in VERSIONS["KUBERNETES_VERSIONS"].split():
        for o in objs:
            if o["kind"] in crd_kinds:
                continue
            try:
                kubernetes_validate.validate(o, k8s, strict=True)
            except kubernetes_validate.ValidationError as e:
                pytest.fail(f"{name}: {o['kind']}/{o['metadata']['name']} invalid for Kubernetes {k8s}: "
                            f"{e.message} at {list(e.path)}")
            checked += 1
    assert checked >= len(VERSIONS["KUBERNETES_VERSIONS"].split()) * 15


def keda_module_dir():
    with tempfile.TemporaryDirectory() as tmp:  # outside any module; offline once cached
        r = subprocess.run(["go", "mod", "download", "-json", f"github.com/kedacore/keda/v2@{VERSIONS['KEDA_VERSION']}"],
                           capture_output=True, text=True, cwd=tmp, timeout=300,
                           env=dict(os.environ, GOFLAGS="-mod=mod"))
    assert r.returncode == 0, f"go mod download of KEDA failed (run scripts/install-deps.sh):\n{r.stdout}{r.stderr}"
    return Path(json.loads(r.stdout)["Dir"])


@pytest.fixture(scope="module")
def keda():
    d = keda_module_dir()
    crd = yaml.safe_load((d / "config" / "crd" / "bases" / "keda.sh_scaledobjects.yaml").read_text())
    schemas = {f"{crd['spec']['group']}/{v['name']}": v["schema"]["openAPIV3Schema"] for v in crd["spec"]["versions"]}
    src = (d / "pkg" / "scalers" / "kafka_scaler.go").read_text()
    kafka_keys = set(re.findall(r'keda:"name=([A-Za-z]+)', src))
    assert {"bootstrapServers", "consumerGroup", "topic", "lagThreshold"} <= kafka_keys
    return schemas, kafka_keys


def strict(schema):
    """The API server prunes or (with strict field validation) rejects unknown fields:
    make that explicit for the JSON-schema validator."""
    s = copy.deepcopy(schema)

    def walk(n):
        if isinstance(n, dict):
            if n.get("type") == "object" and "properties" in n and "additionalProperties" not in n \
                    and not n.get("x-kubernetes-preserve-unknown-fields"):
                n["additionalProperties"] = False
            for v in n.values():
                walk(v)
        elif isinstance(n, list):
            for v in n:
                walk(v)
    walk(s)
    s["properties"]["metadata"] = {"type": "object"}  # ObjectMeta: validated by the API server
    return s


def test_scaled_objects_valid_against_keda_crd(rendered, keda):
    import jsonschema
    name, objs = rendered
    schemas, kafka_keys = keda
    sos = of_kind(objs, "ScaledObject")
    if "no-keda" in name:
        assert not sos
        return
    assert len(sos) == len(STAGES)
    for so in sos:
        schema = schemas.get(so["apiVersion"])
        assert schema, f"KEDA {VERSIONS['KEDA_VERSION']} has no {so['apiVersion']}"
        errors = list(jsonschema.Draft7Validator(strict(schema)).iter_errors(so))
        assert not errors, f"{so['metadata']['name']}: " + "; ".join(f"{list(e.path)}: {e.message}" for e in errors)
        for t in so["spec"]["triggers"]:
            assert t["type"] == "kafka"
            assert set(t["metadata"]) <= kafka_keys, set(t["metadata"]) - kafka_keys


def test_strict_keda_schema_rejects_unknown_fields(keda):
    import jsonschema
    schemas, _ = keda
    so = of_kind(render(), "ScaledObject")[0]
    so["spec"]["maxReplicas"] = 3  # the field is maxReplicaCount
    assert list(jsonschema.Draft7Validator(strict(schemas[so["apiVersion"]])).iter_errors(so))


# --- content ---------------------------------------------------------------------------

def test_every_role_has_probes_resources_pdb_prestop_and_grace(rendered):
    name, objs = rendered
    pdbs = of_kind(objs, "PodDisruptionBudget")
    deployments = of_kind(objs, "Deployment")
    assert sorted(d["metadata"]["name"] for d in deployments) == sorted(f"ps-paystream-{r}" for r in expected_roles(name))
    for role in expected_roles(name):
        d = deployment(objs, role)
        pod = d["spec"]["template"]["spec"]
        c = container(d)
        ports = {p["name"]: p["containerPort"] for p in c["ports"]}
        for probe, path in (("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")):
            assert probe in c, f"{role}: no {probe}"
            assert c[probe]["httpGet"]["path"] == path, f"{role}: {probe} not on {path}"
            assert c[probe]["httpGet"]["port"] in ports, f"{role}: {probe} on an undeclared port"
        for kind in ("requests", "limits"):
            assert {"cpu", "memory"} <= set(c.get("resources", {}).get(kind, {})), f"{role}: resources.{kind}"
        labels = d["spec"]["template"]["metadata"]["labels"]
        selecting = [p for p in pdbs if p["spec"]["selector"]["matchLabels"].items() <= labels.items()]
        assert len(selecting) == 1, f"{role}: {len(selecting)} PDBs select it"
        for other in deployments:  # the PDB selects this role only
            if other is not d:
                assert not selecting[0]["spec"]["selector"]["matchLabels"].items() <= \
                    other["spec"]["template"]["metadata"]["labels"].items()
        pre = c.get("lifecycle", {}).get("preStop")
        assert pre and ("sleep" in pre or "exec" in pre), f"{role}: no preStop hook"
        pre_s = pre.get("sleep", {}).get("seconds", 0)
        args = c["args"]
        if role == "gateway":
            drain = 2 * int(flag(args, "--shutdown-timeout-ms", 10000)) / 1000  # requests, then the Kafka flush
        elif role == "acquirer-sim":
            drain = 15  # src/app/acquirer_sim_server.cpp kDrainTimeoutMs
        else:
            drain = WORKER_FLUSH_S
            if role == "worker-processor":
                drain += int(flag(args, "--acquirer-timeout-ms", 2000)) * int(flag(args, "--acquirer-max-attempts", 3)) / 1000
        assert pod["terminationGracePeriodSeconds"] > pre_s + drain, f"{role}: grace period not above the drain"
        sc = c["securityContext"]
        assert sc["readOnlyRootFilesystem"] is True and sc["allowPrivilegeEscalation"] is False
        assert pod["securityContext"]["runAsNonRoot"] is True


def test_services_reach_the_roles(rendered):
    name, objs = rendered
    services = by_name(objs, "Service")
    for role in expected_roles(name):
        svc = services.get(f"ps-paystream-{role}")
        assert svc, f"no Service for {role}"
        labels = deployment(objs, role)["spec"]["template"]["metadata"]["labels"]
        assert svc["spec"]["selector"].items() <= labels.items()
        ports = {p["name"] for p in container(deployment(objs, role))["ports"]}
        assert {p["targetPort"] for p in svc["spec"]["ports"]} <= ports


def test_listen_addresses_match_the_container_ports(rendered):
    name, objs = rendered
    for role in expected_roles(name):
        c = container(deployment(objs, role))
        listen = flag(c["args"], "--metrics-listen") if role.startswith("worker-") else flag(c["args"], "--listen")
        assert listen and listen.startswith("0.0.0.0:"), f"{role}: must listen on every interface"
        assert int(listen.rsplit(":", 1)[1]) in {p["containerPort"] for p in c["ports"]}


def test_gateway_has_a_cpu_hpa(rendered):
    _, objs = rendered
    hpa = by_name(objs, "HorizontalPodAutoscaler").get("ps-paystream-gateway")
    assert hpa, "no HPA for the gateway"
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "ps-paystream-gateway"}
    cpu = [m for m in hpa["spec"]["metrics"] if m["type"] == "Resource" and m["resource"]["name"] == "cpu"]
    assert cpu and cpu[0]["resource"]["target"]["type"] == "Utilization"
    assert "replicas" not in deployment(objs, "gateway")["spec"], "replicas would fight the HPA"


def topics_partitions(objs):
    job = by_name(objs, "Job")["ps-paystream-topics"]
    spec = job["spec"]["template"]["spec"]
    create = [c for c in spec.get("initContainers", []) + spec["containers"] if c["args"][:2] == ["topics", "create"]]
    assert len(create) == 1
    return job, spec, create[0]


def test_each_worker_stage_scales_on_its_consumer_group_and_topics(rendered):
    name, objs = rendered
    prefix = ""  # neither values file sets config.topicPrefix
    _, _, create = topics_partitions(objs)
    partitions = int(flag(create["args"], "--partitions"))
    if "no-keda" in name:
        assert not of_kind(objs, "ScaledObject")
        hpas = by_name(objs, "HorizontalPodAutoscaler")
        for stage, topics in STAGES.items():
            hpa = hpas.get(f"ps-paystream-worker-{stage}")
            assert hpa, f"no external-metric HPA for {stage}"
            assert hpa["spec"]["scaleTargetRef"]["name"] == f"ps-paystream-worker-{stage}"
            assert hpa["spec"]["maxReplicas"] <= partitions
            ext = [m["external"] for m in hpa["spec"]["metrics"] if m["type"] == "External"]
            assert len(ext) == len(topics) == len(hpa["spec"]["metrics"])
            assert sorted(e["metric"]["selector"]["matchLabels"]["topic"] for e in ext) == sorted(prefix + t for t in topics)
            for e in ext:
                assert e["metric"]["selector"]["matchLabels"]["consumergroup"] == prefix + stage
                assert e["target"]["type"] == "AverageValue" and int(e["target"]["averageValue"]) > 0
            assert "replicas" not in deployment(objs, f"worker-{stage}")["spec"]
        return
    sos = by_name(objs, "ScaledObject")
    for stage, topics in STAGES.items():
        so = sos.get(f"ps-paystream-worker-{stage}")
        assert so, f"no ScaledObject for {stage}"
        assert so["spec"]["scaleTargetRef"]["name"] == f"ps-paystream-worker-{stage}"
        assert 1 <= so["spec"]["minReplicaCount"] <= so["spec"]["maxReplicaCount"] <= partitions
        triggers = so["spec"]["triggers"]
        assert sorted(t["metadata"]["topic"] for t in triggers) == sorted(prefix + t for t in topics)
        for t in triggers:
            assert t["type"] == "kafka"
            md = t["metadata"]
            assert md["consumerGroup"] == prefix + stage
            assert int(md["lagThreshold"]) > 0
            assert md["bootstrapServers"] == by_name(objs, "ConfigMap")["ps-paystream-config"]["data"]["PAYSTREAM_KAFKA_BROKERS"]
        assert "replicas" not in deployment(objs, f"worker-{stage}")["spec"], "replicas would fight KEDA"
    assert "ps-paystream-worker-fraud" not in by_name(objs, "HorizontalPodAutoscaler")


def test_consumer_groups_in_the_chart_are_the_binarys():
    src = (ROOT / "src" / "app" / "distributed.cpp").read_text()
    found = dict(re.findall(r'runner\("(\w+)", \{([^}]*)\}', src))
    consts = {"t_initiated": "tx.initiated", "t_validated": "tx.validated", "t_settled": "tx.settled", "t_failed": "tx.failed"}
    assert {g: [consts[x.strip()] for x in ts.split(",")] for g, ts in found.items()} == STAGES


def hook_of(o):
    a = annotations(o)
    return set(a.get("helm.sh/hook", "").split(",")) - {""}, int(a.get("helm.sh/hook-weight", "0"))


def test_migrate_job_is_a_pre_install_pre_upgrade_hook(rendered):
    name, objs = rendered
    job = by_name(objs, "Job").get("ps-paystream-migrate")
    assert job, "no migrate Job"
    hooks, weight = hook_of(job)
    assert {"pre-install", "pre-upgrade"} <= hooks
    c = job["spec"]["template"]["spec"]["containers"][0]
    assert c["args"] == ["migrate"]
    assert job["spec"]["template"]["spec"]["restartPolicy"] == "Never"
    # What it reads exists before it runs: chart-made ConfigMap/Secret are earlier hooks.
    cm = by_name(objs, "ConfigMap")["ps-paystream-config"]
    cm_hooks, cm_weight = hook_of(cm)
    assert {"pre-install", "pre-upgrade"} <= cm_hooks and cm_weight < weight
    secret_name = [e["valueFrom"]["secretKeyRef"]["name"] for e in c["env"] if e["name"] == "PAYSTREAM_POSTGRES_URL"][0]
    secrets = by_name(objs, "Secret")
    if secret_name in secrets:
        s_hooks, s_weight = hook_of(secrets[secret_name])
        assert {"pre-install", "pre-upgrade"} <= s_hooks and s_weight < weight
    else:
        assert name.startswith("production"), "the Secret must be made by the chart or named as existing"


def test_topics_job_creates_3_partitions_rf_3_min_isr_2(rendered):
    _, objs = rendered
    job, spec, create = topics_partitions(objs)
    hooks, weight = hook_of(job)
    assert {"pre-install", "pre-upgrade"} <= hooks
    assert weight < hook_of(by_name(objs, "Job")["ps-paystream-migrate"])[1], "topics before the migration"
    assert flag(create["args"], "--partitions") == "3"
    assert flag(create["args"], "--replication-factor") == "3"
    # The binary sets min.insync.replicas and the tx.dlq retention on the topics it creates.
    assert flag(create["args"], "--min-insync-replicas") == "2"
    assert int(flag(create["args"], "--dlq-retention-ms")) >= 7 * 24 * 3600 * 1000, "a week at least to replay"
    assert [c["name"] for c in spec["containers"]] == ["create"], "no Kafka image by default"


def test_topics_job_can_also_set_existing_topics_with_kafka_tools():
    objs = render("--set", "topics.kafkaTools.enabled=true")
    job, spec, create = topics_partitions(objs)
    assert create in spec.get("initContainers", [])
    script = " ".join(" ".join(c.get("command", []) + c.get("args", [])) for c in spec["containers"])
    assert "kafka-configs.sh" in script and "--alter" in script
    assert "min.insync.replicas=2" in script
    for t in ALL_TOPICS:
        assert t in script


def source_options():
    """Every --flag the binary defines and its PAYSTREAM_* variable (src/app/*.cpp)."""
    flags, envs = set(), {"PAYSTREAM_ADMIN_KEY", "PAYSTREAM_CONFIG"}
    for f in (ROOT / "src" / "app").glob("*.cpp"):
        text = f.read_text()
        for m in re.finditer(r'(?:opt\(c, |add_option\(|add_flag\()"(--[a-z0-9-]+)"', text):
            flags.add(m.group(1))
            envs.add("PAYSTREAM_" + m.group(1)[2:].upper().replace("-", "_"))
        envs.update(re.findall(r'envname\("(PAYSTREAM_[A-Z0-9_]+)"\)', text))
    assert "--shutdown-timeout-ms" in flags and "--metrics-listen" in flags
    return flags, envs


def test_chart_passes_only_real_options(rendered):
    _, objs = rendered
    flags, envs = source_options()
    subcommands = {"gateway", "worker", "acquirer-sim", "migrate", "topics"}
    for o in of_kind(objs, "Deployment") + of_kind(objs, "Job"):
        spec = o["spec"]["template"]["spec"]
        for c in spec.get("initContainers", []) + spec["containers"]:
            if c["image"].startswith("apache/kafka"):
                continue
            assert c["args"][0] in subcommands
            for a in c["args"]:
                if a.startswith("--"):
                    assert a in flags, f"{o['metadata']['name']}: {a} is not an option of the binary"
            for e in c.get("env", []):
                assert e["name"] in envs, f"{o['metadata']['name']}: {e['name']}"
    for cm in of_kind(objs, "ConfigMap"):
        for k in cm["data"]:
            assert k in envs, f"ConfigMap key {k} is no option of the binary"
    for s in of_kind(objs, "Secret"):
        assert set(s["stringData"]) <= envs


@pytest.mark.parametrize("mode", ["keda", "external"])
def test_topic_prefix_reaches_groups_and_topics(mode):
    objs = render("--set", "config.topicPrefix=t1.", "--set", f"workers.autoscaling.mode={mode}")
    assert by_name(objs, "ConfigMap")["ps-paystream-config"]["data"]["PAYSTREAM_TOPIC_PREFIX"] == "t1."
    for stage, topics in STAGES.items():
        if mode == "keda":
            md = [t["metadata"] for t in by_name(objs, "ScaledObject")[f"ps-paystream-worker-{stage}"]["spec"]["triggers"]]
            groups, seen = {m["consumerGroup"] for m in md}, sorted(m["topic"] for m in md)
        else:
            sel = [m["external"]["metric"]["selector"]["matchLabels"]
                   for m in by_name(objs, "HorizontalPodAutoscaler")[f"ps-paystream-worker-{stage}"]["spec"]["metrics"]]
            groups, seen = {s["consumergroup"] for s in sel}, sorted(s["topic"] for s in sel)
        assert groups == {"t1." + stage}
        assert seen == sorted("t1." + t for t in topics)


def test_short_admin_key_fails_the_render():
    """The gateways refuse an admin key under 24 characters; the chart says so at render time."""
    r = helm_run("template", "ps", str(CHART), "--set", "secret.adminKey=ak_short",
                 "--kube-version", VERSIONS["KUBERNETES_VERSIONS"].split()[-1])
    assert r.returncode != 0
    assert "at least 24 characters" in r.stderr, r.stderr
    objs = render("--set", "secret.adminKey=ak_" + "0" * 21)
    secret = next(o for o in objs if o["kind"] == "Secret")
    assert secret["stringData"]["PAYSTREAM_ADMIN_KEY"] == "ak_" + "0" * 21
