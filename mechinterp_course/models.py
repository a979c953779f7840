"""The course's small transformers and the model zoo.

Every model in the course is a TransformerLens 4.x ``TransformerBridge`` built with ``boot_native``: the same hook
names, caches and weight views (``W_Q``: ``[n_layers, n_heads, d_model, d_head]``) that published TransformerLens
work uses, with no Hugging Face download.

Initialisation. ``boot_native``'s default initialisation differs from the 2.x ``HookedTransformer`` one (upstream
issue 1568), and results such as *when* an induction head forms depend on it. The course therefore sets every
weight itself (:func:`init_weights`): each weight matrix is drawn from ``Normal(0, init_std)`` with
``init_std = 0.8 / sqrt(d_model)`` (the 2.x default "init_range"), biases are zero, and parameters are drawn in
sorted name order from a ``torch.Generator`` seeded with the model's seed, so the same seed gives the same weights on
every machine.

The zoo. ``load("induction-2l")`` returns a shipped model: weights in ``mechinterp_course/zoo/NAME.safetensors`` and a
JSON model card beside them (config, recipe, seed, metrics measured at the end of training, size). ``mechinterp-course
train NAME`` rebuilds it from its recipe (``mechinterp_course.recipes``).
"""

from __future__ import annotations

import functools
import json
import math
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

ZOO_DIR = Path(__file__).parent / "zoo"
#: Zoo files are readable by everyone: safetensors writes its files owner-only (0600), and a graded notebook's
#: kernel runs as another user, which must load the zoo's models.
ZOO_FILE_MODE = 0o644

#: Weight init scale relative to 1/sqrt(d_model); 0.8 is TransformerLens 2.x's default ``init_range``.
INIT_SCALE = 0.8


@dataclass
class ModelConfig:
    """The few architecture choices the course's models vary; everything else is fixed by the course."""

    n_layers: int
    d_model: int
    n_heads: int
    d_head: int
    d_vocab: int
    n_ctx: int
    d_mlp: int | None = None
    attn_only: bool = True
    act_fn: str = "relu"
    normalization_type: str | None = None
    d_vocab_out: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def bridge_config(self, seed: int):
        """The ``TransformerBridgeConfig`` that ``boot_native`` needs."""
        from transformer_lens.config import TransformerBridgeConfig

        kwargs = dict(
            n_layers=self.n_layers,
            d_model=self.d_model,
            n_heads=self.n_heads,
            d_head=self.d_head,
            d_vocab=self.d_vocab,
            n_ctx=self.n_ctx,
            attn_only=self.attn_only,
            act_fn=self.act_fn,
            normalization_type=self.normalization_type,
            positional_embedding_type="standard",
            architecture="TransformerLensNative",
            seed=seed,
            **self.extra,
        )
        if self.d_mlp is not None:
            kwargs["d_mlp"] = self.d_mlp
        if self.d_vocab_out is not None:
            kwargs["d_vocab_out"] = self.d_vocab_out
        return TransformerBridgeConfig(**kwargs)


def init_weights(model: torch.nn.Module, seed: int, d_model: int) -> None:
    """Set every parameter with the course's documented initialisation (see the module docstring).

    Why not ``boot_native``'s own: it changed between TransformerLens versions; the course's numbers (when induction
    heads form, when a model groks) must not move when the library does.
    """
    generator = torch.Generator().manual_seed(seed)
    init_std = INIT_SCALE / math.sqrt(d_model)
    state = model.state_dict()
    with torch.no_grad():
        new_state = {}
        for name in sorted(state):
            tensor = state[name]
            if name.endswith("bias"):
                new_state[name] = torch.zeros_like(tensor)
            elif name.endswith("weight") and tensor.ndim == 1:  # a LayerNorm scale
                new_state[name] = torch.ones_like(tensor)
            else:
                new_state[name] = torch.randn(tensor.shape, generator=generator) * init_std
        model.load_state_dict(new_state)


def make_model(config: ModelConfig | dict, seed: int = 0, device: str = "cpu"):
    """Build a freshly initialised course model (a ``TransformerBridge``) in eval mode.

    ``boot_native`` returns a model in training mode and some TransformerLens utilities refuse to patch until
    ``.eval()``; the course's models have no dropout, so eval mode changes nothing else.
    """
    if isinstance(config, dict):
        config = ModelConfig(**config)
    from transformer_lens.model_bridge import TransformerBridge

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = TransformerBridge.boot_native(config.bridge_config(seed))
    init_weights(model, seed, config.d_model)
    model.course_config = asdict(config)  # how to rebuild it: the grader sends models to a kernel this way
    return _to_device(model, device).eval()


def _to_device(model, device: str):
    """Move a model only when needed: the bridge prints a line on every ``.to()``, which clutters notebooks."""
    current = next(model.parameters()).device
    return model if current == torch.device(device) else model.to(device)


def n_params(model: torch.nn.Module) -> int:
    return sum(t.numel() for t in model.state_dict().values())


# --------------------------------------------------------------------------------------------------------------
# The zoo
# --------------------------------------------------------------------------------------------------------------


def _paths(name: str, zoo_dir: Path | None = None) -> tuple[Path, Path]:
    zoo_dir = ZOO_DIR if zoo_dir is None else Path(zoo_dir)
    return zoo_dir / f"{name}.safetensors", zoo_dir / f"{name}.json"


def list_zoo(zoo_dir: Path | None = None) -> list[str]:
    """Names of the models shipped in the zoo."""
    zoo_dir = ZOO_DIR if zoo_dir is None else Path(zoo_dir)
    # A model is a card NAME.json beside its weights NAME.safetensors (files shipped beside a model, such as
    # NAME.tokenizer.json, are not models).
    return sorted(p.stem for p in zoo_dir.glob("*.json") if p.with_suffix(".safetensors").exists())


def save(model: torch.nn.Module, name: str, card: dict, zoo_dir: Path | None = None) -> Path:
    """Write ``model``'s weights (safetensors, float32) and its model card (JSON) into the zoo."""
    from safetensors.torch import save_file

    weights_path, card_path = _paths(name, zoo_dir)
    weights_path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(weights_path), metadata={"name": name})
    weights_path.chmod(ZOO_FILE_MODE)
    card = dict(card, name=name, n_params=n_params(model), size_bytes=weights_path.stat().st_size)
    card_path.write_text(json.dumps(card, indent=2, sort_keys=True) + "\n")
    return weights_path


def save_snapshots(snapshots: dict[int, dict[str, torch.Tensor]], name: str, zoo_dir: Path | None = None) -> Path:
    """Write a training trajectory beside a zoo model: ``NAME.snapshots.safetensors``, keys ``"{step:06d}/{param}"``,
    stored in float16 (half the size; plenty for plotting progress measures)."""
    from safetensors.torch import save_file

    weights_path, _ = _paths(name, zoo_dir)
    path = weights_path.with_name(f"{name}.snapshots.safetensors")
    flat = {
        f"{step:06d}/{key}": value.detach().to(torch.float16).contiguous()
        for step, state in snapshots.items()
        for key, value in state.items()
    }
    save_file(flat, str(path), metadata={"name": name})
    path.chmod(ZOO_FILE_MODE)
    return path


def save_file(name: str, suffix: str, content: bytes, zoo_dir: Path | None = None) -> Path:
    """Write a file that ships beside a zoo model (``NAME.SUFFIX``: its tokenizer, a token sample)."""
    weights_path, _ = _paths(name, zoo_dir)
    path = weights_path.with_name(f"{name}.{suffix}")
    path.write_bytes(content)
    return path


def zoo_file(name: str, suffix: str, zoo_dir: Path | None = None) -> Path:
    """The path of a file shipped beside a zoo model (see :func:`save_file`); a clear error when it is missing."""
    weights_path, _ = _paths(name, zoo_dir)
    path = weights_path.with_name(f"{name}.{suffix}")
    if not path.exists():
        raise KeyError(f"Zoo model {name!r} ships no {suffix!r} (looked for {path}).")
    return path


def load_snapshots(name: str, zoo_dir: Path | None = None) -> dict[int, dict[str, torch.Tensor]]:
    """``{step: state_dict}`` (float32) of a zoo model's shipped training trajectory."""
    from safetensors.torch import load_file

    weights_path, _ = _paths(name, zoo_dir)
    path = weights_path.with_name(f"{name}.snapshots.safetensors")
    if not path.exists():
        raise KeyError(f"Zoo model {name!r} ships no snapshots.")
    snapshots: dict[int, dict[str, torch.Tensor]] = {}
    for key, value in load_file(str(path)).items():
        step, param = key.split("/", 1)
        snapshots.setdefault(int(step), {})[param] = value.float()
    return dict(sorted(snapshots.items()))


def card(name: str, zoo_dir: Path | None = None) -> dict:
    """The model card of a zoo model: config, recipe, seed, metrics at the end of training, size."""
    _, card_path = _paths(name, zoo_dir)
    if not card_path.exists():
        raise KeyError(f"No zoo model called {name!r}. Shipped models: {', '.join(list_zoo(zoo_dir)) or 'none'}.")
    return json.loads(card_path.read_text())


def load(name: str, device: str = "cpu", zoo_dir: Path | None = None):
    """Load a shipped zoo model; returns ``(model, card)``.

    >>> model, card = load("induction-2l")   # doctest: +SKIP
    """
    from safetensors.torch import load_file

    model_card = card(name, zoo_dir)
    weights_path, _ = _paths(name, zoo_dir)
    model = make_model(model_card["config"], seed=model_card["seed"])
    model.load_state_dict(load_file(str(weights_path)))
    return _to_device(model, device).eval(), model_card


def config_dict(config: ModelConfig) -> dict:
    return asdict(config)


@functools.lru_cache(maxsize=4)
def zoo_state(name: str) -> tuple[dict[str, torch.Tensor], dict]:
    """``(state_dict, card)`` of a zoo model, read once per process (do not modify the tensors)."""
    model, model_card = load(name)
    return {k: v.clone() for k, v in model.state_dict().items()}, model_card


def fresh(name: str):
    """A pristine copy of a zoo model, whatever a notebook did to the one it loaded (hooks, edited weights): what
    the checks hand to a student's function. Loads the checkpoint once per process."""
    state, model_card = zoo_state(name)
    model = make_model(model_card["config"], seed=model_card["seed"])
    model.load_state_dict(state)
    model.zoo_name = name
    return model.eval()
