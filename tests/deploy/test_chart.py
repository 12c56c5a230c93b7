"""The dlpipe chart: helm lint, helm-unittest, what each variant renders, and its hardening."""

from __future__ import annotations

import re
from typing import Any

import pytest
import yaml

from tests.deploy.tools import CHART, KUBE_VERSION, VARIANTS, helm_template, run, tool

Objects = list[dict[str, Any]]


def _one(objects: Objects, kind: str, name: str) -> dict[str, Any]:
    found = [o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind} {name}, got {[o['kind'] for o in objects]}"
    return found[0]


def _pod_spec(obj: dict[str, Any]) -> dict[str, Any]:
    return obj["spec"]["template"]["spec"]


def _spark_spec(obj: dict[str, Any]) -> dict[str, Any]:
    return obj["spec"]["template"] if obj["kind"] == "ScheduledSparkApplication" else obj["spec"]


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_helm_lint_strict(variant: str) -> None:
    run([tool("helm"), "lint", "--strict", CHART, "--kube-version", KUBE_VERSION,
         "-f", VARIANTS[variant]])


def test_helm_unittest_suites_pass() -> None:
    out = run([tool("helm-unittest"), "--color=false", CHART]).stdout
    assert "Test Suites:" in out and "failed" not in out.split("Test Suites:")[1].split("\n")[0], out


def test_values_schema_rejects_bad_values() -> None:
    proc = helm_template([VARIANTS["default"]], sets=["retrain.workers=0"], check=False)
    assert proc.returncode != 0
    assert "/retrain/workers" in proc.stderr


def test_missing_credentials_secret_is_an_error() -> None:
    proc = helm_template(check=False)
    assert proc.returncode != 0
    assert "s3.existingSecret is required" in proc.stderr


def test_default_render_has_every_application(rendered: dict[str, Objects]) -> None:
    objects = rendered["default"]
    ingest = _one(objects, "SparkApplication", "dlpipe-ingest")
    assert ingest["apiVersion"] == "sparkoperator.k8s.io/v1beta2"
    assert ingest["spec"]["restartPolicy"]["type"] == "Always"
    assert ingest["spec"]["mainApplicationFile"].endswith("spark_jobs/ingest/job.py")

    retrain = _one(objects, "ScheduledSparkApplication", "dlpipe-retrain")
    assert retrain["spec"]["schedule"] == "0 3 * * *"
    assert retrain["spec"]["template"]["executor"]["instances"] == 2
    score = _one(objects, "ScheduledSparkApplication", "dlpipe-score")
    assert score["spec"]["template"]["mainApplicationFile"].endswith("spark_jobs/score/job.py")

    serving = _pod_spec(_one(objects, "Deployment", "dlpipe-serving"))
    init = serving["initContainers"][0]
    assert init["name"] == "storage-initializer"
    assert init["command"][:5] == ["dlpipe", "models", "sync", "--dest", "/models"]
    tfs = serving["containers"][0]
    assert tfs["image"].startswith("tensorflow/serving:")
    assert "--model_base_path=/models/digits-cnn" in tfs["args"]
    assert {"name": "models", "mountPath": "/models", "readOnly": True} in tfs["volumeMounts"]
    assert tfs["readinessProbe"]["httpGet"]["path"] == "/v1/models/digits-cnn"
    _one(objects, "Service", "dlpipe-serving")


def test_gpu_render_asks_for_gpus(rendered: dict[str, Objects]) -> None:
    retrain = _one(rendered["gpu"], "ScheduledSparkApplication", "dlpipe-retrain")["spec"]["template"]
    executor = retrain["executor"]
    assert executor["gpu"] == {"name": "nvidia.com/gpu", "quantity": 1}
    assert executor["nodeSelector"] == {"cloud.google.com/gke-accelerator": "nvidia-tesla-t4"}
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in executor["tolerations"]
    conf = retrain["sparkConf"]
    assert conf["spark.executor.resource.gpu.amount"] == "1"
    assert conf["spark.executor.resource.gpu.discoveryScript"].startswith("/opt/dlpipe/")
    assert conf["spark.task.resource.gpu.amount"] == "1"
    assert executor["instances"] == 4
    _one(rendered["gpu"], "HorizontalPodAutoscaler", "dlpipe-serving")
    # ...and the CPU default asks for none.
    cpu = _one(rendered["default"], "ScheduledSparkApplication", "dlpipe-retrain")["spec"]["template"]
    assert "gpu" not in cpu["executor"]
    assert not any("gpu" in key for key in cpu["sparkConf"])


def test_tf_serving_off_renders_the_dlpipe_server(rendered: dict[str, Objects]) -> None:
    serving = _pod_spec(_one(rendered["tf-serving-off"], "Deployment", "dlpipe-serving"))
    assert "initContainers" not in serving
    [server] = serving["containers"]
    assert server["command"][:2] == ["dlpipe", "serve"]
    assert server["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert server["livenessProbe"]["httpGet"]["path"] == "/healthz"
    env = {e["name"]: e.get("value") for e in server["env"]}
    assert env["DLPIPE_S3_ENDPOINT"] == "https://s3.eu-west-1.amazonaws.com"
    assert env["DLPIPE_KAFKA_BOOTSTRAP_SERVERS"].startswith("kafka-0.example.internal:9093")
    assert env["DLPIPE__TRAINING__EPOCHS"] == "20"


def _containers(obj: dict[str, Any]) -> list[tuple[str, dict[str, Any], dict[str, Any]]]:
    """(where, container security context, pod security context) of every container."""
    if obj["kind"] == "Deployment":
        pod = _pod_spec(obj)
        return [(f"{obj['metadata']['name']}/{c['name']}", c, pod.get("securityContext", {}))
                for c in pod.get("initContainers", []) + pod["containers"]]
    if obj["kind"] in ("SparkApplication", "ScheduledSparkApplication"):
        spec = _spark_spec(obj)
        return [(f"{obj['metadata']['name']}/{role}", spec[role], spec[role].get("podSecurityContext", {}))
                for role in ("driver", "executor")]
    return []


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_every_container_is_hardened_and_sized(rendered: dict[str, Objects], variant: str) -> None:
    checked = 0
    for obj in rendered[variant]:
        for where, container, pod_sc in _containers(obj):
            checked += 1
            sc = container["securityContext"]
            assert sc["runAsNonRoot"] is True or pod_sc.get("runAsNonRoot") is True, where
            assert sc["allowPrivilegeEscalation"] is False, where
            assert sc["capabilities"]["drop"] == ["ALL"], where
            assert sc["readOnlyRootFilesystem"] is True, where
            if obj["kind"] == "Deployment":
                for kind in ("requests", "limits"):
                    assert {"cpu", "memory"} <= set(container["resources"][kind]), (where, kind)
            else:  # the operator turns these into the pod's requests and limits
                assert container["cores"] and container["coreLimit"] and container["memory"], where
    assert checked >= 7  # 3 Spark apps x (driver, executor) + at least one serving container


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_credentials_are_only_referenced(rendered: dict[str, Objects], variant: str) -> None:
    secret = {"default": "dlpipe-s3", "gpu": "dlpipe-s3", "tf-serving-off": "external-s3"}[variant]
    objects = rendered[variant]
    assert not [o for o in objects if o["kind"] == "Secret"]
    for obj in objects:
        for where, container, _ in _containers(obj):
            if obj["kind"] == "Deployment":
                if container["name"] == "tensorflow-serving":
                    assert "env" not in container  # reads /models only
                    continue
                env = {e["name"]: e for e in container["env"]}
                for name in ("DLPIPE_S3_ACCESS_KEY", "DLPIPE_S3_SECRET_KEY"):
                    assert "value" not in env[name], where
                    assert env[name]["valueFrom"]["secretKeyRef"]["name"] == secret, where
            else:
                refs = container["envSecretKeyRefs"]
                assert {r["name"] for r in refs.values()} == {secret}, where
                # S3A in the driver and executor JVMs reads AWS_* (never the Spark conf)
                assert set(refs) == {"DLPIPE_S3_ACCESS_KEY", "DLPIPE_S3_SECRET_KEY",
                                     "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"}, where
                assert refs["AWS_SECRET_ACCESS_KEY"] == refs["DLPIPE_S3_SECRET_KEY"], where
                assert not any("s3a.secret.key" in str(v) or "s3a.access.key" in str(v)
                               for v in container.values()), where
                assert not {"DLPIPE_S3_ACCESS_KEY", "DLPIPE_S3_SECRET_KEY"} & set(container["envVars"])


def _key_lines(text: str) -> dict[tuple[str, ...], int]:
    """Dotted key path -> line index of every mapping key in a block-style YAML file."""
    out: dict[tuple[str, ...], int] = {}
    stack: list[tuple[int, str]] = []
    for i, line in enumerate(text.splitlines()):
        stripped = line.strip()
        match = re.match(r"^([A-Za-z0-9_.\"/-]+):(\s|$)", stripped)
        if not stripped or stripped.startswith(("#", "-")) or not match:
            continue
        indent = len(line) - len(line.lstrip())
        while stack and stack[-1][0] >= indent:
            stack.pop()
        stack.append((indent, match.group(1)))
        out[tuple(key for _, key in stack)] = i
    return out


def _leaves(node: Any, path: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    if isinstance(node, dict) and node:
        return [leaf for key, value in node.items() for leaf in _leaves(value, (*path, str(key)))]
    return [path]


def _documented(lines: list[str], index: int) -> bool:
    j = index - 1
    while j >= 0 and lines[j].strip().startswith("#"):
        if lines[j].strip().startswith("# --"):
            return True
        j -= 1
    return False


def test_every_value_is_documented() -> None:
    """helm-docs style: every leaf value (or a map it belongs to) has a `# --` comment."""
    text = (CHART / "values.yaml").read_text()
    lines, keys = text.splitlines(), _key_lines(text)
    undocumented = [
        ".".join(leaf) for leaf in _leaves(yaml.safe_load(text))
        if not any(_documented(lines, keys[leaf[:n]]) for n in range(1, len(leaf) + 1))
    ]
    assert not undocumented, "values without a `# --` comment: " + ", ".join(undocumented)
    assert len(_leaves(yaml.safe_load(text))) > 50


def test_documentation_check_can_fail() -> None:
    text = "image:\n  # -- The image.\n  repository: x\n  tag: y\n"
    lines, keys = text.splitlines(), _key_lines(text)
    flagged = [leaf for leaf in _leaves(yaml.safe_load(text))
               if not any(_documented(lines, keys[leaf[:n]]) for n in range(1, len(leaf) + 1))]
    assert flagged == [("image", "tag")]


def test_tf_serving_is_the_release_of_the_tensorflow_that_exports_the_models() -> None:
    """Issue 19: TF Serving 2.19 was asked to load SavedModels written by TF 2.21 (ops newer
    than the server's). The chart's TF Serving and setup.cfg's TensorFlow move together."""
    from pathlib import Path

    values = yaml.safe_load((CHART / "values.yaml").read_text())
    tag = values["serving"]["tfServing"]["image"]["tag"]
    setup = (Path(CHART).parents[1] / "setup.cfg").read_text()
    (tensorflow,) = re.findall(r"^\s+tensorflow-cpu==(\S+)$", setup, re.M)
    (api,) = re.findall(r"^\s+tensorflow-serving-api==(\S+)$", setup, re.M)
    assert tag.split(".")[:2] == tensorflow.split(".")[:2] == api.split(".")[:2], (tag, tensorflow, api)


def _spark_pods(objects: Objects) -> list[tuple[str, dict[str, Any]]]:
    return [(f"{o['metadata']['name']}/{role}", _spark_spec(o)[role]) for o in objects
            if o["kind"] in ("SparkApplication", "ScheduledSparkApplication")
            for role in ("driver", "executor")]


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_every_pod_is_behind_a_default_deny_and_spark_admits_only_its_own(
        rendered: dict[str, Objects], variant: str) -> None:
    """Issue 16: a default-deny ingress policy selects every pod of the release; the Spark
    pods admit their own driver and executors (any port) and the metrics port, nothing else."""
    objects = rendered[variant]
    deny = _one(objects, "NetworkPolicy", "dlpipe-default-deny")["spec"]
    assert deny["policyTypes"] == ["Ingress"] and "ingress" not in deny
    selector = deny["podSelector"]["matchLabels"]
    serving = _one(objects, "Deployment", "dlpipe-serving")
    pod_labels = [("serving", serving["spec"]["template"]["metadata"]["labels"])]
    pod_labels += [(where, pod["labels"]) for where, pod in _spark_pods(objects)]
    for where, labels in pod_labels:
        assert selector.items() <= labels.items(), f"{where} is not behind the default deny"

    spark = _one(objects, "NetworkPolicy", "dlpipe-spark")["spec"]
    for where, pod in _spark_pods(objects):
        assert spark["podSelector"]["matchLabels"].items() <= pod["labels"].items(), where
    own, metrics = spark["ingress"]
    assert own == {"from": [{"podSelector": {"matchLabels": spark["podSelector"]["matchLabels"]}}]}
    assert metrics["ports"] == [{"port": 9108, "protocol": "TCP"}]


def test_egress_is_denied_when_asked_except_dns_and_the_allowed() -> None:
    allowed = {"to": [{"ipBlock": {"cidr": "10.20.0.0/16"}}], "ports": [{"port": 9000}]}
    out = helm_template([VARIANTS["default"]], sets=[
        "networkPolicy.egress.enabled=true",
        "networkPolicy.egress.allowTo[0].to[0].ipBlock.cidr=10.20.0.0/16",
        "networkPolicy.egress.allowTo[0].ports[0].port=9000"]).stdout
    deny = _one([o for o in yaml.safe_load_all(out) if o], "NetworkPolicy", "dlpipe-default-deny")
    assert deny["spec"]["policyTypes"] == ["Ingress", "Egress"]
    dns, extra = deny["spec"]["egress"]
    assert {p["port"] for p in dns["ports"]} == {53} and extra == allowed


def test_spark_drivers_cannot_change_services(rendered: dict[str, Objects]) -> None:
    """Issue 16: the Spark role creates and deletes its driver's Service, never updates or
    patches one (nor can it touch anything beyond pods, services, config maps and claims)."""
    role = _one(rendered["default"], "Role", "dlpipe-spark")
    verbs = {r: set(rule["verbs"]) for rule in role["rules"] for r in rule["resources"]}
    assert "update" not in verbs["services"] and "patch" not in verbs["services"]
    assert verbs["services"] >= {"create", "delete", "get", "list", "watch"}
    assert set(verbs) == {"pods", "services", "configmaps", "persistentvolumeclaims"}


def test_each_workload_can_take_its_own_s3_identity() -> None:
    """Issue 16, least privilege: s3.componentSecrets gives a workload its own Secret (its own
    MinIO/S3 identity); the rest keep s3.existingSecret."""
    own = {"ingest": "s3-ingest", "retrain": "s3-retrain", "score": "s3-score", "serving": "s3-serving"}
    out = helm_template([VARIANTS["default"]],
                        sets=[f"s3.componentSecrets.{k}={v}" for k, v in own.items()]).stdout
    seen: dict[str, set[str]] = {}
    for obj in (o for o in yaml.safe_load_all(out) if o):
        component = obj["metadata"].get("labels", {}).get("app.kubernetes.io/component")
        for _, container, _ in _containers(obj):
            refs = ([e["valueFrom"]["secretKeyRef"]["name"] for e in container.get("env", [])
                     if "valueFrom" in e and e["name"].startswith("DLPIPE_S3_")]
                    + [r["name"] for r in container.get("envSecretKeyRefs", {}).values()])
            seen.setdefault(component, set()).update(refs)
    assert seen == {**{c: {s} for c, s in own.items()}, "maintain": {"dlpipe-s3"}}, seen


def test_the_spark_submit_pod_template_matches_the_charts_spark_pods(rendered: dict[str, Objects]) -> None:
    """helm/dlpipe/files/spark-pod-template.yaml (plain spark-submit on Kubernetes) carries
    the hardening the chart gives the operator's driver and executor pods, and its /tmp."""
    template = yaml.safe_load((CHART / "files" / "spark-pod-template.yaml").read_text())
    (container,) = template["spec"]["containers"]
    app = _spark_spec(_one(rendered["default"], "SparkApplication", "dlpipe-ingest"))
    for role in ("driver", "executor"):
        assert template["spec"]["securityContext"] == app[role]["podSecurityContext"], role
        assert container["securityContext"] == app[role]["securityContext"], role
        assert container["volumeMounts"] == app[role]["volumeMounts"], role
    assert template["spec"]["volumes"] == app["volumes"]
