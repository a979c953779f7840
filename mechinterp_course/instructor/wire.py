"""How the grader and a graded kernel exchange values: arguments one way, results the other.

The two directions are not alike, because only one side is trusted:

- **Grader -> kernel** (:func:`dump_call` / :func:`load_call`): the arguments a check passes to the student's
  function, as a pickle the kernel loads. The grader is trusted, so pickle is fine; models travel as how to rebuild
  them (a zoo name, or a course config and weights), not as pickled modules. Nothing defined in a chapter's
  ``checks.py`` or ``reference.py`` may travel: the kernel cannot import those modules.
- **Kernel -> grader** (:func:`encode` / :func:`decode`): what the student's function returned. The kernel runs
  student code, so nothing it sends may run code on the grader's side: values are JSON (numbers, strings, lists,
  tuples, sets, dicts, dataclasses as dicts) and tensors are safetensors bytes. Anything else is refused with a message.
"""

from __future__ import annotations

import base64
import dataclasses
import io
import json
import math
import pickle
from typing import Any

import torch

#: Nesting and size limits for what a kernel may send (a result deeper or larger than this is refused).
MAX_DEPTH = 32
MAX_TENSORS = 4096
MAX_TENSOR_BYTES = 256 * 1024 * 1024


class WireError(ValueError):
    """A value that cannot travel (the message says what it was)."""


# --------------------------------------------------------------------------------------------------------------
# Grader -> kernel: pickled arguments, models by recipe
# --------------------------------------------------------------------------------------------------------------


def _model_id(obj: Any) -> tuple | None:
    zoo = getattr(obj, "zoo_name", None)
    if zoo is not None:
        return ("zoo", zoo)
    config = getattr(obj, "course_config", None)
    if config is not None and isinstance(obj, torch.nn.Module):
        return ("course-model", config, _state_bytes(obj.state_dict()))
    return None


def _state_bytes(state: dict[str, torch.Tensor]) -> bytes:
    from safetensors.torch import save

    # Clones: a cache holds the same tensor under several hook names, and safetensors refuses shared storage.
    return save({k: v.detach().cpu().clone().contiguous() for k, v in state.items()})


class _Pickler(pickle.Pickler):
    def persistent_id(self, obj: Any) -> Any:
        if isinstance(obj, torch.nn.Module):
            return _model_id(obj)
        if type(obj).__name__ == "ActivationCache" and hasattr(obj, "cache_dict") and hasattr(obj, "model"):
            model = _model_id(obj.model)
            if model is None:
                raise WireError("an ActivationCache of a model the grader cannot rebuild")
            return ("cache", model, _state_bytes(dict(obj.cache_dict)))
        return None


#: Zoo models a kernel has rebuilt, by name: reused, with their weights restored and hooks removed before each call
#: (building a TransformerBridge costs more than the student's function often does).
_ZOO_MODELS: dict[str, torch.nn.Module] = {}


def _load_model(pid: tuple):
    from .. import models

    if pid[0] == "zoo":
        model = _ZOO_MODELS.get(pid[1])
        if model is None:
            model = _ZOO_MODELS[pid[1]] = models.fresh(pid[1])
        else:
            state, _ = models.zoo_state(pid[1])
            model.reset_hooks()
            model.load_state_dict(state)
            model.eval()
        return model
    from safetensors.torch import load

    model = models.make_model(pid[1])
    model.load_state_dict(load(pid[2]))
    return model.eval()


class _Unpickler(pickle.Unpickler):
    def persistent_load(self, pid: Any) -> Any:
        if pid[0] in ("zoo", "course-model"):
            return _load_model(pid)
        if pid[0] == "cache":
            from safetensors.torch import load
            from transformer_lens import ActivationCache

            return ActivationCache(load(pid[2]), _load_model(pid[1]))
        raise pickle.UnpicklingError(f"unknown persistent id {pid[0]!r}")


def dump_call(args: tuple, kwargs: dict) -> bytes:
    """Pickle a call's arguments for the kernel (trusted direction)."""
    buffer = io.BytesIO()
    _Pickler(buffer, protocol=pickle.HIGHEST_PROTOCOL).dump((tuple(args), dict(kwargs)))
    return buffer.getvalue()


def load_call(data: bytes) -> tuple[tuple, dict]:
    return _Unpickler(io.BytesIO(data)).load()


# --------------------------------------------------------------------------------------------------------------
# Kernel -> grader: JSON and safetensors, nothing that runs code
# --------------------------------------------------------------------------------------------------------------


def encode(value: Any) -> dict:
    """``{"value": <JSON tree>, "tensors": <base64 safetensors>}`` for a student's result (kernel side)."""
    tensors: dict[str, torch.Tensor] = {}

    def walk(item: Any, depth: int) -> Any:
        if depth > MAX_DEPTH:
            raise WireError(f"the value is nested more than {MAX_DEPTH} levels deep")
        if item is None or isinstance(item, (bool, str)):
            return item
        if isinstance(item, int):
            return item if abs(item) < 2**53 else {"t": "bigint", "v": str(item)}
        if isinstance(item, float):
            return item if math.isfinite(item) else {"t": "float", "v": repr(item)}
        if isinstance(item, torch.Tensor):
            if item.is_sparse or item.is_complex() or item.layout != torch.strided:
                raise WireError(f"a {item.layout} / {item.dtype} tensor (use a dense real tensor)")
            if len(tensors) >= MAX_TENSORS:
                raise WireError(f"more than {MAX_TENSORS} tensors")
            key = str(len(tensors))
            tensors[key] = item.detach().cpu().contiguous().clone()
            return {"t": "tensor", "k": key}
        if type(item).__module__ == "numpy":
            import numpy as np

            if isinstance(item, np.ndarray):
                return walk(torch.from_numpy(np.ascontiguousarray(item)), depth)
            if isinstance(item, np.generic):
                return walk(item.item(), depth)
        if isinstance(item, (list, tuple)):
            return {"t": "list" if isinstance(item, list) else "tuple", "v": [walk(v, depth + 1) for v in item]}
        if isinstance(item, dict):
            return {"t": "dict", "v": [[walk(k, depth + 1), walk(v, depth + 1)] for k, v in item.items()]}
        if isinstance(item, (set, frozenset)):
            return {"t": "set", "v": [walk(v, depth + 1) for v in item]}
        if isinstance(item, torch.Size):
            return walk(tuple(item), depth)
        if dataclasses.is_dataclass(item) and not isinstance(item, type):
            fields = {f.name: getattr(item, f.name) for f in dataclasses.fields(item)}
            return {"t": "dataclass", "name": type(item).__name__, "v": walk(fields, depth + 1)}
        raise WireError(f"a {type(item).__name__} (return tensors, numbers, strings, lists, tuples, sets or dicts)")

    tree = walk(value, 0)
    if tensors:
        from safetensors.torch import save

        payload = base64.b64encode(save(tensors)).decode()
    else:
        payload = ""
    return {"value": tree, "tensors": payload}


def decode(message: dict) -> Any:
    """The value :func:`encode` sent (grader side): JSON and safetensors only, so nothing in it can run."""
    if not isinstance(message, dict):
        raise WireError("malformed message")
    blob = message.get("tensors") or ""
    tensors: dict[str, torch.Tensor] = {}
    if blob:
        raw = base64.b64decode(blob, validate=True)
        if len(raw) > MAX_TENSOR_BYTES:
            raise WireError(f"more than {MAX_TENSOR_BYTES // 2**20} MB of tensors")
        from safetensors.torch import load

        tensors = load(raw)

    def walk(item: Any, depth: int) -> Any:
        if depth > MAX_DEPTH + 2:
            raise WireError("nested too deeply")
        if item is None or isinstance(item, (bool, int, float, str)):
            return item
        if not isinstance(item, dict) or "t" not in item:
            raise WireError("malformed value")
        kind = item["t"]
        if kind == "tensor":
            return tensors[str(item["k"])]
        if kind == "bigint":
            return int(item["v"])
        if kind == "float":
            return float(item["v"])
        if kind in ("list", "tuple"):
            values = [walk(v, depth + 1) for v in item["v"]]
            return values if kind == "list" else tuple(values)
        if kind == "dict":
            out = {}
            for key, value in item["v"]:
                key = walk(key, depth + 1)
                if isinstance(key, (list, dict, torch.Tensor)):
                    raise WireError("an unhashable dict key")
                out[key] = walk(value, depth + 1)
            return out
        if kind == "set":
            members = [walk(v, depth + 1) for v in item["v"]]
            if any(isinstance(m, (list, dict, set, torch.Tensor)) for m in members):
                raise WireError("an unhashable member of a set")
            return set(members)
        if kind == "dataclass":
            return walk(item["v"], depth + 1)
        raise WireError(f"unknown kind {kind!r}")

    return walk(message.get("value"), 0)


def to_json(message: dict) -> str:
    return json.dumps(message, allow_nan=False)
