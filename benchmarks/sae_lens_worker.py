"""sae-lens's side of ``benchmarks/sae_lens_bench.py``: run in the benchmark's own virtual environment (sae-lens needs
TransformerLens < 4, the course needs 4), never imported by the course.

It reads one JSON command a line on stdin and answers one JSON line on stdout (sae-lens's own prints go to stderr):

- ``{"cmd": "init", "data": PATH, "arch": "relu"|"topk", "l1_coefficient", "k", "lr", "dead_feature_window"}``:
  loads the activations and the initial weights from the safetensors file ``PATH`` and builds sae-lens's training
  SAE (``StandardTrainingSAE`` or ``TopKTrainingSAE``, their defaults otherwise) and its ``SAETrainer``;
- ``{"cmd": "train", "start": i, "steps": n}``: training steps ``i .. i + n - 1``, step ``j`` on rows
  ``[j * batch, (j + 1) * batch)`` of the activations (modulo their number), each by ``SAETrainer.step`` (forward,
  loss, backward, ``clip_grad_norm_(..., 1.0)``, Adam; what ``SAETrainer.fit`` runs), each timed;
- ``{"cmd": "eval"}``: explained variance and L0 on the held-out activations (the course's ``sae.evaluate``
  formulas);
- ``{"cmd": "quit"}``.
"""

from __future__ import annotations

import json
import sys
import time

import torch
from safetensors.torch import load_file

torch.set_num_threads(2)
reply, sys.stdout = sys.stdout, sys.stderr  # only our answers on stdout


def build(command: dict):
    import sae_lens
    from sae_lens.config import SAETrainerConfig
    from sae_lens.saes.standard_sae import StandardTrainingSAE, StandardTrainingSAEConfig
    from sae_lens.saes.topk_sae import TopKTrainingSAE, TopKTrainingSAEConfig
    from sae_lens.training.sae_trainer import SAETrainer

    data = load_file(command["data"])
    d_sae, d_in = data["W_dec"].shape
    # decoder_init_norm=1.0: unit decoder rows at the start, as the course's SAE (sae-lens's default is 0.1); the
    # weights are then overwritten by the shared initial ones anyway.
    if command["arch"] == "relu":
        config = StandardTrainingSAEConfig(
            d_in=d_in, d_sae=d_sae, l1_coefficient=command["l1_coefficient"], decoder_init_norm=1.0
        )
        sae = StandardTrainingSAE(config)
    else:
        # use_sparse_activations stays False (the default): with True, backward fails on the CPU in this torch
        # (aten::view has no SparseCPU kernel).
        sae = TopKTrainingSAE(TopKTrainingSAEConfig(d_in=d_in, d_sae=d_sae, k=command["k"], decoder_init_norm=1.0))
    with torch.no_grad():
        for name in ("W_enc", "b_enc", "W_dec", "b_dec"):
            getattr(sae, name).copy_(data[name])
    batch = command["batch"]
    trainer_config = SAETrainerConfig(
        total_training_samples=batch * 1_000_000,
        train_batch_size_samples=batch,
        lr=command["lr"],
        lr_end=command["lr"],
        dead_feature_window=command["dead_feature_window"],
    )
    trainer = SAETrainer(trainer_config, sae, data_provider=iter(()))
    return sae, trainer, data, {"sae_lens": sae_lens.__version__, "torch": torch.__version__}


@torch.no_grad()
def evaluate(sae, x: torch.Tensor) -> dict[str, float]:
    l0, recons = [], []
    for rows in x.split(4096):
        f = sae.encode(rows)
        l0.append((f > 0).double().sum(-1))
        recons.append(sae.decode(f))
    recon = torch.cat(recons)
    variance = (x - x.mean(0)).pow(2).sum()
    return {"l0": float(torch.cat(l0).mean()), "explained_variance": float(1 - (x - recon).pow(2).sum() / variance)}


def main() -> None:
    sae = trainer = data = None
    for line in sys.stdin:
        command = json.loads(line)
        if command["cmd"] == "init":
            sae, trainer, data, versions = build(command)
            batch = command["batch"]
            answer = versions
        elif command["cmd"] == "train":
            seconds = []
            for step in range(command["start"], command["start"] + command["steps"]):
                start = (step * batch) % len(data["train"])
                x = data["train"][start : start + batch]
                began = time.perf_counter()
                output = trainer.step(x)
                seconds.append(time.perf_counter() - began)
                trainer.n_training_steps += 1
            answer = {"seconds": seconds, "loss": float(output.loss.detach())}
        elif command["cmd"] == "eval":
            answer = evaluate(sae, data["eval"])
        else:
            return
        reply.write(json.dumps(answer) + "\n")
        reply.flush()


if __name__ == "__main__":
    main()
