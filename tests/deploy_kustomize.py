"""Test helper: render a kustomization in Python, for the Kubernetes deploy tests.

Not kustomize: the subset deploy/ uses (``resources`` that are files or directories, ``namespace``,
``images``, and strategic-merge ``patches`` from files, with ``$patch: delete`` for a whole resource or a
list item, and ``null`` to remove a key). Anything else is refused rather than half rendered. Where
``kubectl`` is installed, ``test_deploy_kubernetes_fleet.py`` checks that this renders exactly what
``kubectl kustomize`` does, which keeps it honest; where it is not, the tests still run.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml

Manifest = dict[str, Any]

KUSTOMIZATION_KEYS = frozenset({"apiVersion", "kind", "namespace", "resources", "images", "patches"})
CLUSTER_SCOPED = frozenset({"Namespace"})
# The patch merge keys (x-kubernetes-patch-merge-key) of the lists our patches touch; any other list is
# replaced as a whole, as strategic merge does for lists without one.
MERGE_KEYS = {
    "containers": "name",
    "initContainers": "name",
    "volumes": "name",
    "volumeMounts": "mountPath",
    "env": "name",
    "topologySpreadConstraints": "topologyKey",
}
DIRECTIVE = "$patch"


class Unsupported(Exception):
    """The kustomization uses something this helper does not render."""


def load_documents(path: Path) -> list[Manifest]:
    return [doc for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")) if doc is not None]


def identity(document: Manifest) -> tuple[str, str]:
    return document["kind"], document["metadata"]["name"]


def render(directory: Path) -> list[Manifest]:
    """The resources ``kubectl kustomize directory`` would print (in no particular order)."""
    (kustomization,) = load_documents(directory / "kustomization.yaml")
    unknown = set(kustomization) - KUSTOMIZATION_KEYS
    if unknown:
        raise Unsupported(f"{directory}: kustomization keys {sorted(unknown)}")
    resources: list[Manifest] = []
    for entry in kustomization.get("resources", []):
        path = (directory / entry).resolve()
        resources.extend(render(path) if path.is_dir() else load_documents(path))
    for patch_entry in kustomization.get("patches", []):
        if set(patch_entry) != {"path"}:
            raise Unsupported(f"{directory}: only strategic-merge patches from a file ({patch_entry})")
        for patch in load_documents(directory / patch_entry["path"]):
            resources = apply_patch(resources, patch)
    namespace = kustomization.get("namespace")
    if namespace is not None:
        for resource in resources:
            if resource["kind"] not in CLUSTER_SCOPED:
                resource["metadata"]["namespace"] = namespace
    for image in kustomization.get("images", []):
        set_image(resources, image)
    return resources


def apply_patch(resources: list[Manifest], patch: Manifest) -> list[Manifest]:
    matches = [r for r in resources if identity(r) == identity(patch)]
    if len(matches) != 1:
        raise Unsupported(f"patch {identity(patch)} matches {len(matches)} resources")
    (target,) = matches
    if patch.get(DIRECTIVE) == "delete":
        return [r for r in resources if r is not target]
    merged = merge(target, {k: v for k, v in patch.items() if k not in ("apiVersion", "kind")})
    return [merged if r is target else r for r in resources]


def merge(base: Any, patch: Any, field: str = "") -> Any:
    """Strategic merge of ``patch`` into ``base`` (neither is modified)."""
    if isinstance(patch, dict):
        if DIRECTIVE in patch:
            raise Unsupported(f"{field}: {DIRECTIVE}: {patch[DIRECTIVE]} here")
        result = copy.deepcopy(base) if isinstance(base, dict) else {}
        for key, value in patch.items():
            if value is None:
                result.pop(key, None)
            else:
                result[key] = merge(result.get(key), value, key)
        return result
    if isinstance(patch, list) and field in MERGE_KEYS and isinstance(base, list):
        return merge_list(base, patch, MERGE_KEYS[field])
    return copy.deepcopy(patch)


def merge_list(base: list[Any], patch: list[Any], key: str) -> list[Any]:
    result = [copy.deepcopy(item) for item in base]
    for item in patch:
        position = next((i for i, old in enumerate(result) if old.get(key) == item[key]), None)
        if item.get(DIRECTIVE) == "delete":
            if position is None:
                raise Unsupported(f"delete of {key}={item[key]!r}: no such item")
            del result[position]
        elif position is None:
            result.append(copy.deepcopy(item))
        else:
            result[position] = merge(result[position], item)
    return result


def set_image(resources: list[Manifest], image: dict[str, str]) -> None:
    for resource in resources:
        pod = resource.get("spec", {}).get("template", {}).get("spec", {})
        for container in pod.get("containers", []):
            name, _, tag = container["image"].partition(":")
            if name == image["name"]:
                container["image"] = f"{image.get('newName', name)}:{image.get('newTag', tag)}"
