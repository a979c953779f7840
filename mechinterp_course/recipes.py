"""Zoo recipes: how every shipped model was trained, so that ``mechinterp-course train NAME`` rebuilds it.

A recipe is a function ``(seed, progress) -> (model, card)``. It must be deterministic for a given seed on a given
machine (same thread count), quick enough to re-run, and it records in the card the metrics it measured at the end of
training, which a test re-measures from the shipped checkpoint.
"""

from __future__ import annotations

import platform
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F

from . import models, tasks
from .training import TrainConfig, train

RECIPES: dict[str, Callable] = {}


def recipe(name: str):
    def register(fn):
        RECIPES[name] = fn
        return fn

    return register


def next_token_loss(logits: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy of predicting ``tokens[:, 1:]`` from ``logits[:, :-1]``."""
    return F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), tokens[:, 1:].reshape(-1))


# --------------------------------------------------------------------------------------------------------------
# induction-2l: the "Circuits" chapter's model
# --------------------------------------------------------------------------------------------------------------

INDUCTION_CONFIG = models.ModelConfig(n_layers=2, d_model=64, n_heads=4, d_head=16, d_vocab=128, n_ctx=64)
INDUCTION_TRAIN = dict(batch=64, seq_len=64, min_period=6, max_period=32, steps=1000, lr=3e-3, weight_decay=0.0)
#: Evaluation convention for induction (Olsson et al.; TransformerLens demos): BOS + N random tokens repeated twice.
INDUCTION_EVAL = dict(batch=64, half_len=30, seed=12345)


def induction_metrics(model) -> dict[str, float]:
    """The numbers an induction model's card records; re-measured by the tests from the shipped checkpoint. (The
    head scores are chapter 01's exercises: a recipe uses their reference answers.)"""
    from . import circuits
    from .circuits import reference

    d_vocab, half_len = model.cfg.d_vocab, INDUCTION_EVAL["half_len"]
    tokens = tasks.repeated_tokens(INDUCTION_EVAL["batch"], half_len, d_vocab, seed=INDUCTION_EVAL["seed"])
    with torch.no_grad():
        logits, cache = model.run_with_cache(tokens)
    losses = circuits.per_token_loss(logits, tokens)  # [batch, pos - 1]
    scores = circuits.all_head_scores(cache, model.cfg.n_layers, reference.induction_scores, half_len=half_len)
    prev = circuits.all_head_scores(cache, model.cfg.n_layers, reference.previous_token_scores)
    return {
        "repeated_first_half_loss": float(losses[:, :half_len].mean()),
        "repeated_second_half_loss": float(losses[:, half_len + 1 :].mean()),
        "max_induction_score": float(scores.max()),
        "n_induction_heads": int((scores > circuits.INDUCTION_THRESHOLD).sum()),
        "max_previous_token_score": float(prev.max()),
    }


@recipe("induction-2l")
def train_induction_2l(seed: int = 0, progress: bool = True, steps: int | None = None):
    """2-layer attention-only transformer on tiled random spans: induction heads form after a few hundred steps.

    ``steps`` shortens the run (tests use it to check determinism cheaply); the zoo model uses the recipe's own.
    """
    spec = dict(INDUCTION_TRAIN, steps=steps or INDUCTION_TRAIN["steps"])
    model = models.make_model(INDUCTION_CONFIG, seed=seed)

    def batch_fn(step: int) -> torch.Tensor:
        # Data seeds are offset from the model seed so that data and weights never share a random stream.
        return tasks.periodic_tokens(
            spec["batch"],
            spec["seq_len"],
            INDUCTION_CONFIG.d_vocab,
            spec["min_period"],
            spec["max_period"],
            seed=1_000_003 * (seed + 1) + step,
        )

    result = train(
        model,
        batch_fn,
        lambda m, tokens: next_token_loss(m(tokens), tokens),
        TrainConfig(
            steps=spec["steps"],
            lr=spec["lr"],
            weight_decay=spec["weight_decay"],
            eval_every=100,
            progress=progress,
            description="induction-2l",
        ),
        eval_fn=lambda m: {"max_induction_score": induction_metrics(m)["max_induction_score"]},
    )
    card = {
        "recipe": "induction-2l",
        "description": "2-layer attention-only transformer trained on random spans tiled to length 64; "
        "token 0 is BOS. Forms a previous-token head (layer 0) and induction heads (layer 1).",
        "config": models.config_dict(INDUCTION_CONFIG),
        "seed": seed,
        "training": dict(spec, optimizer="AdamW", data="tasks.periodic_tokens"),
        "train_seconds": round(result.seconds, 1),
        "trained_on": f"{platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}",
        "metrics": induction_metrics(model),
        "log": result.log,
    }
    return model, card


def build(name: str, seed: int = 0, progress: bool = True, zoo_dir=None, **overrides):
    """Run a recipe and write its model and card into the zoo (``zoo_dir`` defaults to the package's own)."""
    if name not in RECIPES:
        raise KeyError(f"No recipe called {name!r}. Recipes: {', '.join(sorted(RECIPES))}.")
    start = time.perf_counter()
    model, card = RECIPES[name](seed=seed, progress=progress, **overrides)
    models.save(model, name, card, zoo_dir=zoo_dir)
    if getattr(model, "snapshots", None):
        models.save_snapshots(model.snapshots, name, zoo_dir=zoo_dir)
    for suffix, content in getattr(model, "zoo_files", {}).items():  # a tokenizer, a token sample: NAME.SUFFIX
        models.save_file(name, suffix, content, zoo_dir=zoo_dir)
    return model, card, time.perf_counter() - start


# --------------------------------------------------------------------------------------------------------------
# modadd-113: the grokking chapter's published setup (Nanda, Chan, Lieberum, Smith, Steinhardt 2023)
# --------------------------------------------------------------------------------------------------------------

MODADD_P = 113
MODADD_CONFIG = models.ModelConfig(
    n_layers=1,
    d_model=128,
    n_heads=4,
    d_head=32,
    d_mlp=512,
    d_vocab=MODADD_P + 1,
    d_vocab_out=MODADD_P,
    n_ctx=3,
    attn_only=False,
    act_fn="relu",
    normalization_type=None,
)
MODADD_TRAIN = dict(
    train_fraction=0.3,
    data_seed=598,
    steps=15_000,
    lr=1e-3,
    weight_decay=1.0,
    betas=(0.9, 0.98),
    warmup_steps=10,
    log_every=10,
    snapshot_every=500,
)


def modadd_loss(model, tokens: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of the answer at the ``=`` position, in float64 as in the paper (float32 softmax rounding stalls
    the loss near zero and distorts the clean-up phase): the chapter's ``loss_at_equals``, the reference's answer."""
    from .grokking import reference  # trusted code: the chapter's reference answer, loaded when called

    return reference.loss_at_equals(model(tokens), labels)


def modadd_data():
    """The recipe's train/test split (the chapter's reference ``split_indices``, through ``tasks.modular_addition``)."""
    return tasks.modular_addition(MODADD_P, MODADD_TRAIN["train_fraction"], MODADD_TRAIN["data_seed"])


def modadd_metrics(model, data=None) -> dict[str, float]:
    """Train/test loss and accuracy on the recipe's own split (re-measured by the tests from the checkpoint)."""
    from .grokking import reference

    data = modadd_data() if data is None else data
    out = {}
    with torch.no_grad():
        for split, tokens, labels in [
            ("train", data.train_tokens, data.train_labels),
            ("test", data.test_tokens, data.test_labels),
        ]:
            logits = model(tokens)
            out[f"{split}_loss"] = float(reference.loss_at_equals(logits, labels))
            out[f"{split}_accuracy"] = float((logits[:, -1].argmax(-1) == labels).double().mean())
    return out


#: Significant figures kept in the card's loss log: enough to draw losses of 1e-7 on a log scale (a fixed number
#: of decimals would flatten everything below 1e-6 into a staircase).
LOG_SIGNIFICANT_FIGURES = 6


def _significant(value: float, figures: int = LOG_SIGNIFICANT_FIGURES) -> float:
    return float(f"{value:.{figures}g}")


@recipe("modadd-113")
def train_modadd_113(seed: int = 0, progress: bool = True, steps: int | None = None):
    """The paper's setup: grokking after roughly 10k full-batch steps. Takes over an hour on one CPU core; run once
    and shipped with snapshots (fp16), the loss and accuracy log every ``log_every`` steps, and the progress measures
    at every snapshot.

    Every log row is measured after that step's update, train and test alike (the training loop's own
    ``train_loss`` is the loss *before* the update, one step earlier). The progress measures use the key
    frequencies of the final model, as the paper does."""
    from . import grokking
    from .grokking import reference  # trusted code: measured with the chapter's reference answers

    spec = dict(MODADD_TRAIN, steps=steps or MODADD_TRAIN["steps"])
    data = tasks.modular_addition(MODADD_P, spec["train_fraction"], spec["data_seed"])
    model = models.make_model(MODADD_CONFIG, seed=seed)
    result = train(
        model,
        lambda step: (data.train_tokens, data.train_labels),
        lambda m, batch: modadd_loss(m, *batch),
        TrainConfig(
            steps=spec["steps"],
            lr=spec["lr"],
            weight_decay=spec["weight_decay"],
            betas=spec["betas"],
            warmup_steps=spec["warmup_steps"],
            eval_every=spec["log_every"],
            snapshot_every=spec["snapshot_every"],
            progress=progress,
            description="modadd-113",
        ),
        eval_fn=lambda m: modadd_metrics(m, data),
    )
    keys = ("train_loss", "test_loss", "train_accuracy", "test_accuracy")
    log = [{"step": row["step"], **{key: _significant(row[key]) for key in keys}} for row in result.log]
    _, grokked_at = reference.grok_steps(log, grokking.SOLVED_ACCURACY)
    key_freqs = grokking.key_frequencies(reference.frequency_norms(model.W_E[:MODADD_P].detach(), MODADD_P))
    functions = grokking.MeasureFunctions(
        reference.frequency_norms,
        reference.gini,
        reference.restricted_loss,
        reference.excluded_loss,
        reference.sum_of_squared_weights,
    )
    measures = grokking.trajectory_measures(
        result.snapshots, MODADD_CONFIG, seed, data, key_freqs, functions, progress=progress
    )
    card = {
        "recipe": "modadd-113",
        "description": "One-layer ReLU transformer on (a + b) mod 113, 30% of pairs for training, full-batch AdamW "
        "with weight decay 1: the setup of Nanda et al. (2023), 'Progress measures for grokking'.",
        "config": models.config_dict(MODADD_CONFIG),
        "seed": seed,
        "training": dict(
            spec,
            optimizer="AdamW",
            loss="cross-entropy at '=' in float64",
            data="tasks.modular_addition",
            n_train=len(data.train_labels),
        ),
        "train_seconds": round(result.seconds, 1),
        "trained_on": f"{platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}",
        "metrics": modadd_metrics(model, data),
        "grokked_at_step": grokked_at,
        "key_frequencies": key_freqs,
        "accuracy_at_snapshots": _accuracy_curve(result.snapshots, data),
        "progress_measures": [
            {key: (_significant(value) if key != "step" else value) for key, value in row.items()} for row in measures
        ],
        "log": log,
    }
    model.snapshots = result.snapshots  # written beside the checkpoint by save_snapshots
    return model, card


def _accuracy_curve(snapshots: dict, data) -> list[dict]:
    """Train and test accuracy at every snapshot (the coarse-resolution record the card keeps)."""
    model = models.make_model(MODADD_CONFIG, seed=0)
    rows = []
    for step in sorted(snapshots):
        model.load_state_dict(snapshots[step])
        metrics = modadd_metrics(model, data)
        rows.append(
            {
                "step": step,
                "train_accuracy": round(metrics["train_accuracy"], 5),
                "test_accuracy": round(metrics["test_accuracy"], 5),
            }
        )
    return rows


# --------------------------------------------------------------------------------------------------------------
# stdlib-2l: the course's language model, trained on real text (chapters 03 and 04)
# --------------------------------------------------------------------------------------------------------------

#: Why this size. A training step costs about 6 x parameters x tokens flops; one CPU core delivers roughly 40 Gflop/s
#: on these matrices, so an hour buys ~20M tokens (~2 passes over the library) for a ~1.5M-parameter model.
#: d_model 128 with 4 heads of 32 gives heads wide enough to hold a token's identity (induction needs it); d_mlp 512
#: is the usual 4 x d_model (and the SAE chapter's activation width); n_ctx 256 leaves room for in-context learning
#: to show (Olsson et al.'s score compares a late token with an early one). LayerNorm (not folded) and GELU,
#: as in GPT-2, so that chapter 03 can measure how the final LayerNorm's rescaling repairs an ablation.
STDLIB_CONFIG = models.ModelConfig(
    n_layers=2,
    d_model=128,
    n_heads=4,
    d_head=32,
    d_mlp=512,
    d_vocab=4096,
    n_ctx=256,
    attn_only=False,
    act_fn="gelu",
    normalization_type="LN",
)
STDLIB_TRAIN = dict(
    batch=32,
    seq_len=256,
    steps=2400,
    lr=2e-3,
    warmup_steps=100,
    decay_to=0.1,
    weight_decay=0.1,
    betas=(0.9, 0.95),
    grad_clip=1.0,
    eval_every=25,
    threads=1,  # one core: as fast per core as two, and the machine stays usable while it trains
)
#: Olsson et al.'s in-context-learning score: loss at a late token minus loss at an early one (they use the 500th
#: and the 50th of 512); ours, in a 256-token context: positions 200 and 20, each averaged over a window of +-4.
ICL_EARLY, ICL_LATE, ICL_WINDOW = 20, 200, 4
#: The held-out rows the card's metrics (and the tests that re-measure them) use: the first EVAL_ROWS rows of the
#: shipped held-out sample.
STDLIB_EVAL_ROWS = 256
#: The induction check on the card: held-out texts whose first INDUCTION_HALF tokens are repeated (chapter 01's
#: probe, on real text rather than random tokens, which a language model finds out of distribution).
INDUCTION_ROWS, INDUCTION_HALF = 64, 50


def lm_metrics(model, tokens: torch.Tensor) -> dict[str, float]:
    """Held-out loss and the in-context-learning score on ``tokens`` ``[batch, seq_len]`` (BOS-first rows)."""
    from .backup.language import loss_by_position

    loss = loss_by_position(model, tokens)  # [pos - 1]: mean loss of predicting token pos + 1
    window = lambda centre: loss[centre - 1 - ICL_WINDOW : centre + ICL_WINDOW].mean()  # noqa: E731
    return {
        "held_out_loss": float(loss.mean()),
        "icl_score": float(window(ICL_LATE) - window(ICL_EARLY)),
        "loss_at_early_token": float(window(ICL_EARLY)),
        "loss_at_late_token": float(window(ICL_LATE)),
    }


def stdlib_metrics(model, zoo_dir=None) -> dict[str, float]:
    """``lm_metrics`` on the shipped held-out sample's first ``STDLIB_EVAL_ROWS`` rows: what the card records and the
    tests re-measure (the same tokens on every machine, whatever its Python)."""
    from safetensors.torch import load_file

    path = models.zoo_file("stdlib-2l", "tokens.safetensors", zoo_dir)
    return lm_metrics(model, load_file(str(path))["held_out"][:STDLIB_EVAL_ROWS].long())


def stdlib_induction(model, held_out: torch.Tensor) -> dict[str, float]:
    """Did induction heads form? On ``INDUCTION_ROWS`` held-out texts cut to ``INDUCTION_HALF`` tokens and repeated:
    the largest induction score over heads (chapter 01's measure: above ``circuits.INDUCTION_THRESHOLD`` counts as
    an induction head) and how much lower the loss is on the second copy than on the first (near the whole loss
    for a model with induction heads, which predicts a repeat almost perfectly)."""
    from . import circuits
    from .backup.language import loss_by_position, repeated_text
    from .circuits import reference  # trusted code: the chapter's reference answer

    tokens = repeated_text(held_out[:INDUCTION_ROWS], INDUCTION_HALF)  # BOS, text, the same again
    with torch.no_grad():
        _, cache = model.run_with_cache(tokens)
    scores = circuits.all_head_scores(cache, model.cfg.n_layers, reference.induction_scores, half_len=INDUCTION_HALF)
    loss = loss_by_position(model, tokens)  # [2 * half]: position i predicts token i + 1
    first_copy, second_copy = loss[:INDUCTION_HALF].mean(), loss[INDUCTION_HALF + 1 :].mean()
    return {
        "max_induction_score": float(scores.max()),
        "loss_first_copy": float(first_copy),
        "loss_second_copy": float(second_copy),
    }


def ngram_baselines(train_stream: torch.Tensor, held_out: torch.Tensor, d_vocab: int) -> dict[str, float]:
    """Cross-entropy on the held-out rows of a unigram and a bigram model counted on the train stream.

    Unigram: add-one smoothing. Bigram: ``p(b | a) = (count(a, b) + p_unigram(b)) / (count(a) + 1)``, a Dirichlet
    prior of weight 1 towards the unigram, so unseen pairs keep a probability without a tuned constant. The loss
    is over the same predicted tokens as the model's (every token after BOS)."""
    stream = train_stream.long()
    unigram = torch.bincount(stream, minlength=d_vocab).double() + 1
    unigram /= unigram.sum()
    pair_counts = torch.bincount(stream[:-1] * d_vocab + stream[1:], minlength=d_vocab * d_vocab).double()
    pair_counts = pair_counts.reshape(d_vocab, d_vocab)
    previous, target = held_out[:, :-1].long().reshape(-1), held_out[:, 1:].long().reshape(-1)
    bigram = (pair_counts[previous, target] + unigram[target]) / (pair_counts[previous].sum(-1) + 1)
    return {
        "unigram_loss": float(-unigram[target].log().mean()),
        "bigram_loss": float(-bigram.log().mean()),
    }


@recipe("stdlib-2l")
def train_stdlib_2l(seed: int = 0, progress: bool = True, steps: int | None = None):
    """A 2-layer transformer language model trained on the standard library's source (``mechinterp_course.text``).

    Ships with its tokenizer, the held-out rows as tokens (so chapters measure the same numbers on every Python),
    the loss and in-context-learning curves, and an induction check (did induction heads form? In the shipped run,
    20M tokens in, they had not: the card says by how much). Deterministic for a seed on a given machine and Python
    (the corpus hash and the thread count are on the card); about an hour on one core."""
    from . import text

    spec = dict(STDLIB_TRAIN, steps=steps or STDLIB_TRAIN["steps"])
    corpus = text.read_corpus()
    tokenizer = text.train_tokenizer(corpus.train, STDLIB_CONFIG.d_vocab)
    bos = tokenizer.token_to_id(text.BOS)
    train_stream = text.encode_files(tokenizer, corpus.train)
    train_rows = text.windows(train_stream, spec["seq_len"], bos)  # [n_rows, seq_len]
    held_out = text.windows(text.encode_files(tokenizer, corpus.held_out), spec["seq_len"], bos)
    eval_rows = held_out[:STDLIB_EVAL_ROWS]

    def batch_fn(step: int) -> torch.Tensor:
        generator = torch.Generator().manual_seed(1_000_003 * (seed + 1) + step)
        return train_rows[torch.randint(len(train_rows), (spec["batch"],), generator=generator)]

    model = models.make_model(STDLIB_CONFIG, seed=seed)
    LOGGED = ("held_out_loss", "icl_score")  # measured on the first 64 held-out rows while training  # noqa: N806
    result = train(
        model,
        batch_fn,
        lambda m, tokens: next_token_loss(m(tokens), tokens),
        TrainConfig(
            steps=spec["steps"],
            lr=spec["lr"],
            weight_decay=spec["weight_decay"],
            betas=spec["betas"],
            warmup_steps=spec["warmup_steps"],
            decay_to=spec["decay_to"],
            grad_clip=spec["grad_clip"],
            eval_every=spec["eval_every"],
            threads=spec["threads"],
            progress=progress,
            description="stdlib-2l",
        ),
        eval_fn=lambda m: {k: v for k, v in lm_metrics(m, eval_rows[:64]).items() if k in LOGGED},
    )
    card = {
        "recipe": "stdlib-2l",
        "description": "2-layer transformer (attention + MLP, LayerNorm, GELU) trained on the source code of "
        "Python's standard library with a 4096-token byte-level BPE; the course's real-text language model.",
        "config": models.config_dict(STDLIB_CONFIG),
        "seed": seed,
        "training": dict(spec, optimizer="AdamW", data="text.read_corpus: stdlib .py files, train split"),
        "corpus": {
            "python": corpus.python,
            "sha256": corpus.sha256,
            "files": {"train": len(corpus.train), "held_out": len(corpus.held_out)},
            "bytes": corpus.n_bytes,
            "tokens": {"train": len(train_stream), "held_out_rows": len(held_out), "seq_len": spec["seq_len"]},
            "held_out_rule": f"sha256(relative path) % {text.HELD_OUT_MODULUS} == 0",
        },
        "tokenizer": {"vocab_size": tokenizer.get_vocab_size(), "sha256_16": text.tokenizer_fingerprint(tokenizer)},
        "tokens_seen": spec["steps"] * spec["batch"] * spec["seq_len"],
        "train_seconds": round(result.seconds, 1),
        "trained_on": f"{platform.machine()}, {spec['threads']} threads, torch {torch.__version__}",
        "metrics": lm_metrics(model, eval_rows),
        "baselines": ngram_baselines(train_stream, eval_rows, STDLIB_CONFIG.d_vocab),
        "icl_definition": f"mean loss at tokens {ICL_LATE}+-{ICL_WINDOW} minus at {ICL_EARLY}+-{ICL_WINDOW}, "
        f"over the first {STDLIB_EVAL_ROWS} held-out rows (Olsson et al. 2022)",
        "induction": stdlib_induction(model, held_out),
        "log": [{k: (v if k == "step" else _significant(v)) for k, v in row.items()} for row in result.log],
    }
    model.zoo_files = {
        "tokenizer.json": tokenizer.to_str().encode(),
        "tokens.safetensors": _tokens_file(held_out),
    }
    return model, card


def _tokens_file(rows: torch.Tensor) -> bytes:
    """Held-out rows as int16 safetensors bytes (token ids < 32768): the chapters' measuring set."""
    from safetensors.torch import save

    return save({"held_out": rows.to(torch.int16).contiguous()}, metadata={"dtype": "token ids, BOS = 0"})


# --------------------------------------------------------------------------------------------------------------
# backup-plain and backup-dropout: the backup chapter's toy models (symbolic IOI, attention-only)
# --------------------------------------------------------------------------------------------------------------


def backup_metrics(model) -> dict[str, float]:
    """Accuracy, logit difference and backup score (mean ablation, the chapter's reference ``ablation_effects``)
    on the chapter's evaluation prompts; re-measured by the tests from the shipped checkpoint."""
    from . import backup
    from .backup import reference

    batch = backup.prompts(backup.PLAIN_CONFIG)
    measured = backup.backup_score(model, batch, reference.ablation_effects)
    return {
        "accuracy": backup.accuracy(model, batch),
        "logit_diff": measured["logit_diff"],
        "backup_score": measured["score"],
        "n_movers": len(measured["movers"]),
    }


def _train_backup_recipe(name: str, config, seed: int, progress: bool, steps: int | None):
    from dataclasses import replace

    from . import backup

    config = replace(config, seed=seed, steps=steps or config.steps)
    run = backup.train_backup(config, progress=progress, threads=1)
    card = {
        "recipe": name,
        "description": "3-layer attention-only transformer on symbolic IOI (BOS X Y f f S END -> IO), soft "
        f"targets (label noise {config.label_noise}), head dropout {config.head_dropout}: the backup chapter's "
        "toy model.",
        "config": models.config_dict(config.model_config()),
        "seed": seed,
        "training": backup.config_dict(config),
        "train_seconds": round(run.seconds, 1),
        "trained_on": f"{platform.machine()}, 1 thread, torch {torch.__version__}",
        "metrics": backup_metrics(run.model),
        "log": run.log,
    }
    return run.model, card


@recipe("backup-plain")
def train_backup_plain(seed: int = 0, progress: bool = True, steps: int | None = None):
    """The backup chapter's model trained plainly (no head dropout): about 15 s on one core."""
    from . import backup

    return _train_backup_recipe("backup-plain", backup.PLAIN_CONFIG, seed, progress, steps)


@recipe("backup-dropout")
def train_backup_dropout(seed: int = 0, progress: bool = True, steps: int | None = None):
    """The backup chapter's model trained with head dropout 0.3: about 15 s on one core."""
    from . import backup

    return _train_backup_recipe("backup-dropout", backup.DROPOUT_CONFIG, seed, progress, steps)


# --------------------------------------------------------------------------------------------------------------
# trigrams-3x2, trigrams-5x2, source-pairs-2x1: the attention-superposition chapter's toy models
# --------------------------------------------------------------------------------------------------------------


def _attention_toy_recipe(name: str, seed: int, progress: bool, steps: int | None):
    from . import attention_superposition as attn

    model, result, best = attn.train_zoo_model(name, seed=seed, progress=progress, steps=steps)
    kind, n, n_heads, d_head = attn.ZOO_MODELS[name]
    card = {
        "recipe": name,
        "description": f"one-layer attention-only model, {n_heads} heads of d_head {d_head}, one-hot embeddings, "
        + (
            f"on {n} skip-trigrams [A] ... [B] -> [C] (OV-incoherent; Mathwin et al.'s tokens)"
            if kind == "skip_trigrams"
            else "on Greenspan and Wynroe's source pairs (OV-coherent)"
        )
        + f": the attention-superposition chapter's toy model; the best (lowest loss) of "
        f"{attn.ZOO_TRAIN['instances']} seeds trained at once (instance {best}).",
        "config": model.course_config,
        "seed": seed,
        "training": dict(
            attn.TRAIN,
            steps=steps or attn.ZOO_TRAIN["steps"],
            instances=attn.ZOO_TRAIN["instances"],
            kept_instance=best,
            optimizer="AdamW",
        ),
        "train_seconds": round(result.seconds, 1),
        "trained_on": f"{platform.machine()}, 1 thread, torch {torch.__version__}",
        "metrics": attn.zoo_metrics(model, attn.zoo_task(name)),
        "log": result.log,
    }
    return model, card


@recipe("trigrams-3x2")
def train_trigrams_3x2(seed: int = 0, progress: bool = True, steps: int | None = None):
    """3 skip-trigrams, 2 heads of d_head 1 (4 seeds at once, the best kept): about 15 s on one core."""
    return _attention_toy_recipe("trigrams-3x2", seed, progress, steps)


@recipe("trigrams-5x2")
def train_trigrams_5x2(seed: int = 0, progress: bool = True, steps: int | None = None):
    """5 skip-trigrams, 2 heads of d_head 1 (4 seeds at once, the best kept): about 15 s on one core."""
    return _attention_toy_recipe("trigrams-5x2", seed, progress, steps)


@recipe("source-pairs-2x1")
def train_source_pairs_2x1(seed: int = 0, progress: bool = True, steps: int | None = None):
    """Greenspan and Wynroe's source pairs, 2 heads of d_head 1 (4 seeds at once, the best kept): about 20 s."""
    return _attention_toy_recipe("source-pairs-2x1", seed, progress, steps)
