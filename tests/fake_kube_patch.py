"""The three patch types the Kubernetes API server takes, as the fake applies them.

- JSON merge patch (RFC 7386): objects merge, ``null`` deletes, lists are replaced;
- strategic merge patch (Kubernetes' own): like merge patch, except that lists with a
  merge key merge by it — here ``containers``/``initContainers`` by ``name``, as the
  API reference's ``patchMergeKey`` says for PodSpec;
- JSON patch (RFC 6902): ``add``, ``replace``, ``remove``, ``test`` on JSON pointers.
"""

from __future__ import annotations

import copy
from typing import Any

MERGE_BY_NAME = ("containers", "initContainers")


class PatchError(Exception):
    """The patch cannot apply: the API server answers 422."""


def merge_patch(target: Any, patch: Any, *, strategic: bool = False) -> Any:
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = copy.deepcopy(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        elif strategic and key in MERGE_BY_NAME and isinstance(value, list):
            result[key] = _merge_by_name(result.get(key) or [], value)
        else:
            result[key] = merge_patch(result.get(key), value, strategic=strategic)
    return result


def _merge_by_name(current: list[Any], patch: list[Any]) -> list[Any]:
    merged = copy.deepcopy(current)
    for item in patch:
        if not isinstance(item, dict) or "name" not in item:
            raise PatchError("a strategic merge patch of containers needs each item's name")
        for i, existing in enumerate(merged):
            if existing.get("name") == item["name"]:
                merged[i] = merge_patch(existing, item, strategic=True)
                break
        else:
            merged.append(copy.deepcopy(item))
    return merged


def json_patch(target: dict[str, Any], ops: Any) -> dict[str, Any]:
    if not isinstance(ops, list):
        raise PatchError("a JSON patch is a list of operations")
    doc = copy.deepcopy(target)
    for op in ops:
        parts = [p.replace("~1", "/").replace("~0", "~") for p in op["path"].split("/")[1:]]
        parent = doc
        for part in parts[:-1]:
            if not isinstance(parent, dict) or part not in parent:
                raise PatchError(f"path {op['path']} does not exist")
            parent = parent[part]
        last = parts[-1]
        if op["op"] in ("add", "replace"):
            if op["op"] == "replace" and last not in parent:
                raise PatchError(f"replace: {op['path']} does not exist")
            parent[last] = copy.deepcopy(op["value"])
        elif op["op"] == "remove":
            parent.pop(last)
        elif op["op"] == "test" and parent.get(last) != op["value"]:
            raise PatchError(f"test failed at {op['path']}")
    return doc
