"""Terraform: `terraform fmt -check`, and a structural check of every module parsed with hcl2
(`terraform validate` needs the google/helm/kubernetes providers, which cannot be installed
here: registry.terraform.io is unreachable and the provider modules are not on the Go proxy)."""

from __future__ import annotations

import json
import re
import tempfile
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.deploy.tools import TERRAFORM, run, tool

MODULES = [TERRAFORM / "modules" / "gke-cluster", TERRAFORM / "modules" / "dlpipe-platform"]
EXAMPLE = TERRAFORM / "examples" / "gke"
STANDARD_FILES = {"main.tf", "variables.tf", "outputs.tf", "versions.tf"}
PARSE = "import hcl2, json, sys; print(json.dumps({p: hcl2.loads(open(p).read()) for p in sys.argv[1:]}))"


def _plain(node: Any) -> Any:
    """bc-python-hcl2 wraps attribute values in one-element lists and adds line markers."""
    if isinstance(node, dict):
        return {k: _plain(v) for k, v in node.items() if not k.startswith("__")}
    if isinstance(node, list):
        if len(node) == 1 and not isinstance(node[0], dict):
            return _plain(node[0])
        return [_plain(item) for item in node]
    return node


def parse(folder: Path) -> dict[str, Any]:
    """File name -> parsed HCL (checkov's hcl2 parser, in the deploy-tools venv)."""
    files = sorted(folder.glob("*.tf"))
    out = run([tool("python"), "-c", PARSE, *files]).stdout
    return {Path(p).name: _plain(body) for p, body in json.loads(out).items()}


def blocks(parsed: dict[str, Any], kind: str) -> dict[str, dict[str, Any]]:
    """name -> body of every `kind "name" {}` block (variable, output, module, provider)."""
    out: dict[str, dict[str, Any]] = {}
    for body in parsed.values():
        for entry in body.get(kind, []):
            for name, content in entry.items():
                out[name.strip('"')] = content
    return out


def resources(parsed: dict[str, Any]) -> dict[str, dict[str, Any]]:
    out = {}
    for body in parsed.values():
        for entry in body.get("resource", []):
            for rtype, named in entry.items():
                for name, content in named.items():
                    out[f"{rtype.strip(chr(34))}.{name.strip(chr(34))}"] = content
    return out


def problems(folder: Path, parsed: dict[str, Any], *, example: bool = False) -> list[str]:
    """What a module or example lacks by terraform-google-modules' conventions."""
    out = []
    missing_files = STANDARD_FILES - {p.name for p in folder.glob("*.tf")}
    out += [f"{folder.name}: no {name}" for name in sorted(missing_files)]
    if not (folder / "README.md").is_file():
        out.append(f"{folder.name}: no README.md")
    for name, body in blocks(parsed, "variable").items():
        if "type" not in body:
            out.append(f"{folder.name}: variable {name} has no type")
        if len(str(body.get("description", "")).split()) < 3:
            out.append(f"{folder.name}: variable {name} has no description")
    for name, body in blocks(parsed, "output").items():
        if len(str(body.get("description", "")).split()) < 3:
            out.append(f"{folder.name}: output {name} has no description")
    if blocks(parsed, "provider") and not example:
        out.append(f"{folder.name}: provider blocks belong in examples, not modules")
    versions = parsed.get("versions.tf", {}).get("terraform", [{}])[0]
    if "required_version" not in versions:
        out.append(f"{folder.name}: versions.tf pins no required_version")
    for providers in versions.get("required_providers", [{}]):
        for name, spec in providers.items():
            spec = spec[0] if isinstance(spec, list) else spec
            if not re.search(r"\d", str(spec.get("version", ""))) or not spec.get("source"):
                out.append(f"{folder.name}: provider {name} has no source or version pin")
    return out


@pytest.mark.parametrize("folder", [*MODULES, EXAMPLE], ids=lambda p: p.name)
def test_module_follows_the_conventions(folder: Path) -> None:
    assert problems(folder, parse(folder), example=folder == EXAMPLE) == []


def test_structural_check_can_fail(tmp_path: Path) -> None:
    (tmp_path / "main.tf").write_text('provider "google" {}\n')
    (tmp_path / "variables.tf").write_text('variable "x" {\n  default = 1\n}\n')
    found = problems(tmp_path, parse(tmp_path))
    assert f"{tmp_path.name}: no outputs.tf" in found
    assert f"{tmp_path.name}: variable x has no type" in found
    assert f"{tmp_path.name}: variable x has no description" in found
    assert f"{tmp_path.name}: provider blocks belong in examples, not modules" in found


def test_gke_module_has_cpu_and_optional_gpu_pools() -> None:
    res = resources(parse(MODULES[0]))
    assert "google_container_cluster.this" in res
    cpu, gpu = res["google_container_node_pool.cpu"], res["google_container_node_pool.gpu"]
    assert "autoscaling" in cpu and "autoscaling" in gpu
    assert "var.gpu_pool.enabled" in str(gpu["count"])
    assert "guest_accelerator" in str(gpu["node_config"])


def test_private_nodes_get_cloud_nat_for_their_subnetwork() -> None:
    """Issue 19: private nodes (no external IP) could not pull public images without NAT."""
    res = resources(parse(MODULES[0]))
    private = str(res["google_container_cluster.this"]["private_cluster_config"])
    assert "'enable_private_nodes': True" in private
    nat = res["google_compute_router_nat.this"]
    assert "google_compute_router.nat" in str(nat["router"])
    assert nat["source_subnetwork_ip_ranges_to_nat"] == "LIST_OF_SUBNETWORKS"
    assert "var.subnetwork" in str(nat["subnetwork"])
    assert "var.create_cloud_nat" in str(res["google_compute_router.nat"]["count"])


def test_platform_module_installs_every_release() -> None:
    res = resources(parse(MODULES[1]))
    charts = {name: str(body.get("chart")) for name, body in res.items() if name.startswith("helm_release.")}
    assert charts["helm_release.minio"] == "minio"
    assert charts["helm_release.strimzi"] == "strimzi-kafka-operator"
    assert "kafka-cluster" in charts["helm_release.kafka"]
    assert charts["helm_release.spark_operator"] == "spark-operator"
    assert "local.dlpipe_chart" in charts["helm_release.dlpipe"]
    assert "existingSecret" in str(res["helm_release.dlpipe"]["values"])


def test_example_wires_modules_with_declared_variables() -> None:
    parsed = parse(EXAMPLE)
    for name, call in blocks(parsed, "module").items():
        source = (EXAMPLE / str(call["source"])).resolve()
        declared = blocks(parse(source), "variable")
        given = set(call) - {"source", "depends_on", "providers", "count", "for_each"}
        assert given <= set(declared), (name, given - set(declared))
        required = {v for v, body in declared.items() if "default" not in body}
        assert required <= given, (name, required - given)


def test_example_tfvars_match_the_variables() -> None:
    declared = blocks(parse(EXAMPLE), "variable")
    with tempfile.TemporaryDirectory() as folder:
        copy = Path(folder) / "example.tf"
        copy.write_text((EXAMPLE / "terraform.tfvars.example").read_text())
        values = run([tool("python"), "-c", PARSE, copy]).stdout
    given = set(_plain(json.loads(values)[str(copy)]))
    assert given <= set(declared), given - set(declared)
    assert {v for v, body in declared.items() if "default" not in body} <= given


def test_terraform_fmt(tmp_path: Path) -> None:
    config = tmp_path / "terraformrc"
    config.write_text("")
    env = {"TF_CLI_CONFIG_FILE": str(config), "CHECKPOINT_DISABLE": "1"}
    run([tool("terraform"), "fmt", "-check", "-recursive", "-diff", TERRAFORM], env=env)
    bad = tmp_path / "bad.tf"
    bad.write_text('variable "x" {\ntype=string\n}\n')
    assert run([tool("terraform"), "fmt", "-check", bad], check=False, env=env).returncode != 0


def test_kafka_cluster_chart_renders() -> None:
    """The local chart the platform module installs for the Strimzi resources (their CRD schemas
    are not reachable here, so this checks lint and shape only)."""
    chart = MODULES[1] / "charts" / "kafka-cluster"
    run([tool("helm"), "lint", "--strict", chart])
    out = run([tool("helm"), "template", "kafka", chart, "--set", "replicas=1"]).stdout
    docs = {d["kind"]: d for d in yaml.safe_load_all(out) if d}
    assert sorted(docs) == ["Kafka", "KafkaNodePool", "KafkaTopic"]
    assert docs["Kafka"]["spec"]["kafka"]["config"]["min.insync.replicas"] == 1
    assert docs["KafkaTopic"]["spec"]["topicName"] == "dlpipe.raw.images"
