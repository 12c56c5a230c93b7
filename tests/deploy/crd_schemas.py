"""Prepare the JSON schemas kubeconform validates the rendered chart against, offline.

Kubernetes core schemas come from the ``kubernetes-validate`` package, whose "local" schemas
reference a shared ``/api/_definitions.json`` by absolute path; ``--kubernetes DIR`` copies one
version's folder with those references made relative, so kubeconform resolves them on disk.

CustomResourceDefinition YAMLs become one JSON schema per served version.

kubeconform looks a custom resource up as ``<group>/<kind>_<version>.json`` (its
``{{ .Group }}/{{ .ResourceKind }}_{{ .ResourceAPIVersion }}.json`` template, kind lower-cased).
The CRD's ``openAPIV3Schema`` becomes that file, made strict the way kubeconform's own
``openapi2jsonschema.py`` does it: every object that lists its properties rejects unknown
ones (unless it says ``x-kubernetes-preserve-unknown-fields``), and ``int-or-string`` fields
accept both types.

The v1beta2 CRDs reachable here (spark-on-k8s-operator chart 1.1.26) were generated from a
core API older than ``seccompProfile``; the operator's current CRDs embed the full core
``SecurityContext``/``PodSecurityContext``. So, and only for those two fields of drivers and
executors, the core schemas of the same Kubernetes version are substituted (``CORE_FIELDS``).

    python tests/deploy/crd_schemas.py --out DIR --kubernetes K8S_SCHEMA_DIR crd.yaml [...]

Standard library + PyYAML only: the install script runs it with the deploy-tools venv.
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path
from typing import Any

import yaml


def _strict(node: Any) -> Any:
    if isinstance(node, list):
        return [_strict(item) for item in node]
    if not isinstance(node, dict):
        return node
    out = {key: _strict(value) for key, value in node.items()}
    if out.pop("x-kubernetes-int-or-string", False):
        for key in ("type", "anyOf"):
            out.pop(key, None)
        out["oneOf"] = [{"type": "string"}, {"type": "integer"}]
    preserve = out.get("x-kubernetes-preserve-unknown-fields", False)
    if "properties" in out and "additionalProperties" not in out and not preserve:
        out["additionalProperties"] = False
    # Nullable in OpenAPI v3 is a null type in JSON schema.
    if out.pop("nullable", False) and isinstance(out.get("type"), str):
        out["type"] = [out["type"], "null"]
    return out


KUBERNETES_DIR = "kubernetes"
# Fields of a Spark pod (driver, executor) whose schema is the core one: field -> schema file.
CORE_FIELDS = {"securityContext": "io.k8s.api.core.v1.SecurityContext",
               "podSecurityContext": "io.k8s.api.core.v1.PodSecurityContext"}


def _refs(node: Any) -> set[str]:
    if isinstance(node, list):
        return set().union(*(_refs(item) for item in node)) if node else set()
    if not isinstance(node, dict):
        return set()
    out = {node["$ref"].rpartition("/")[2]} if isinstance(node.get("$ref"), str) else set()
    return out.union(*(_refs(value) for value in node.values())) if node else out


def _rewrite_refs(node: Any) -> Any:
    if isinstance(node, list):
        return [_rewrite_refs(item) for item in node]
    if not isinstance(node, dict):
        return node
    out = {key: _rewrite_refs(value) for key, value in node.items()}
    if isinstance(out.get("$ref"), str):
        out["$ref"] = "#/$defs/" + out["$ref"].rpartition("/")[2]
    return out


def standalone(schema: dict[str, Any], definitions: dict[str, Any]) -> dict[str, Any]:
    """``schema`` with every definition it references (transitively) embedded under ``$defs``."""
    needed: set[str] = set()
    todo = _refs(schema)
    while todo:
        name = todo.pop()
        if name in needed:
            continue
        needed.add(name)
        todo |= _refs(definitions[name]) - needed
    out = _rewrite_refs(schema)
    if needed:
        out.setdefault("$defs", {}).update(
            {name: _rewrite_refs(definitions[name]) for name in sorted(needed)})
    return out


def copy_kubernetes(src: Path, out: Path) -> tuple[Path, dict[str, Any]]:
    """Standalone copies of one version's schemas of top-level kinds (kubeconform cannot
    follow kubernetes-validate's ``/api/_definitions.json`` references), and the definitions."""
    definitions = json.loads((src / "_definitions.json").read_text())["$defs"]
    target = out / KUBERNETES_DIR / src.name
    shutil.rmtree(target, ignore_errors=True)
    target.mkdir(parents=True)
    for path in src.glob("*.json"):
        schema = json.loads(path.read_text())
        if path.name.startswith("_") or "x-kubernetes-group-version-kind" not in schema:
            continue
        (target / path.name).write_text(json.dumps(standalone(schema, definitions)))
    return target, definitions


def _core_fields(node: Any, definitions: dict[str, Any]) -> None:
    """Point driver/executor security contexts at the core schemas (see module doc)."""
    if isinstance(node, list):
        for item in node:
            _core_fields(item, definitions)
        return
    if not isinstance(node, dict):
        return
    for role in ("driver", "executor"):
        props = node.get("properties", {}).get(role, {}).get("properties")
        if props:
            for name, definition in CORE_FIELDS.items():
                if name in props:
                    props[name] = {"$ref": f"#/$defs/{definition}"}
    for value in node.values():
        _core_fields(value, definitions)


def convert(crd: dict[str, Any], *, definitions: dict[str, Any] | None = None,
            ) -> dict[str, dict[str, Any]]:
    """File name (relative to the schema folder) -> JSON schema, one per served version."""
    group = crd["spec"]["group"]
    kind = crd["spec"]["names"]["kind"].lower()
    out = {}
    for version in crd["spec"]["versions"]:
        schema = _strict(version["schema"]["openAPIV3Schema"])
        if definitions:
            _core_fields(schema, definitions)
            schema = standalone(schema, definitions)
        schema.setdefault("properties", {})
        schema["properties"].setdefault("apiVersion", {"type": "string"})
        schema["properties"].setdefault("kind", {"type": "string"})
        schema["properties"].setdefault("metadata", {"type": "object"})
        schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
        out[f"{group}/{kind}_{version['name']}.json"] = schema
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="schema folder to write into")
    parser.add_argument("--kubernetes", type=Path, default=None,
                        help="a kubernetes-validate schema folder, e.g. .../v1.33.0-local-strict")
    parser.add_argument("crds", nargs="*", type=Path, help="CRD YAML files")
    args = parser.parse_args(argv)
    definitions = None
    if args.kubernetes:
        target, definitions = copy_kubernetes(args.kubernetes, args.out)
        print(f"    {args.kubernetes} -> {target}")
    for path in args.crds:
        for doc in yaml.safe_load_all(path.read_text()):
            if not doc or doc.get("kind") != "CustomResourceDefinition":
                continue
            for name, schema in convert(doc, definitions=definitions).items():
                target = args.out / name
                target.parent.mkdir(parents=True, exist_ok=True)
                tmp = target.with_suffix(".tmp")
                tmp.write_text(json.dumps(schema, indent=1, sort_keys=True))
                tmp.replace(target)
                print(f"    {path.name} -> {target}")


if __name__ == "__main__":
    main()
