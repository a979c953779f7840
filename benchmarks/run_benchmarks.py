"""Benchmarks: how long each chapter takes and how much memory it needs, and how long each zoo recipe trains.

    ./course bench                 # everything
    ./course bench --only notebooks|recipes
    ./course bench --only recipes --recipe modadd-113   # a long recipe (tens of minutes): only when named

Each solution notebook is executed in a fresh Jupyter kernel (as a student would run it); wall time is measured
around the whole execution (kernel start included) and peak memory is the largest resident set size of the kernel's
process tree, sampled every 50 ms with psutil. Each zoo recipe is re-run into a temporary folder and timed.
Results go to benchmarks/results.json (the latest figures, per machine) and are summarised in benchmarks/RESULTS.md.
The targets (from the issues) are printed beside the figures; nothing here fails a build: targets are tracked, not
asserted in unit tests.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

import nbformat
import psutil
import torch
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parents[1]
RESULTS_JSON = ROOT / "benchmarks" / "results.json"
RESULTS_MD = ROOT / "benchmarks" / "RESULTS.md"
SAMPLE_INTERVAL_S = 0.05
MB = 1024 * 1024

#: Targets from the issues: chapter -> (seconds, megabytes); recipe -> seconds.
NOTEBOOK_TARGETS = {"00_history": (120, 2048), "01_circuits": (180, 2048), "02_grokking": (240, 2048)}
RECIPE_TARGETS = {"induction-2l": 60}


class PeakRSS:
    """Samples the resident memory of a process tree in a background thread; ``peak`` is the largest total seen."""

    def __init__(self, pid: int):
        self.process, self.peak, self._stop = psutil.Process(pid), 0, threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.is_set():
            try:
                tree = [self.process] + self.process.children(recursive=True)
                self.peak = max(self.peak, sum(p.memory_info().rss for p in tree))
            except psutil.Error:
                pass
            time.sleep(SAMPLE_INTERVAL_S)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


def bench_notebook(path: Path) -> dict:
    nb = nbformat.read(path, as_version=4)
    with tempfile.TemporaryDirectory() as work:
        # The autograder's kernel manager: always this interpreter's ipykernel, whatever kernelspecs the machine has.
        from mechinterp_course.autograde import _kernel_classes

        kernel_manager_class, _ = _kernel_classes()
        client = NotebookClient(nb, timeout=600, kernel_name="python3", kernel_manager_class=kernel_manager_class,
                                resources={"metadata": {"path": work}})
        start = time.perf_counter()
        with client.setup_kernel():
            with PeakRSS(client.km.provisioner.process.pid) as memory:
                for index, cell in enumerate(nb.cells):
                    client.execute_cell(cell, index)
        seconds = time.perf_counter() - start
    errors = [o.get("ename") for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])
              if o.get("output_type") == "error"]
    target_s, target_mb = NOTEBOOK_TARGETS.get(path.parent.name, (None, None))
    return {"seconds": round(seconds, 1), "peak_mb": round(memory.peak / MB), "errors": errors,
            "target_seconds": target_s, "target_mb": target_mb}


def bench_recipe(name: str) -> dict:
    from mechinterp_course import recipes

    with tempfile.TemporaryDirectory() as zoo:
        _, card, seconds = recipes.build(name, progress=False, zoo_dir=zoo)
    return {"seconds": round(seconds, 1), "train_loop_seconds": card["train_seconds"], "metrics": card["metrics"],
            "target_seconds": RECIPE_TARGETS.get(name)}


def bench_in_notebook_grokking() -> dict:
    """The chapter 02 run a student watches: the chapter's config until 100 steps after 99% test accuracy."""
    import dataclasses

    from mechinterp_course import grokking

    config = dataclasses.replace(grokking.CHAPTER_CONFIG, steps=1000)
    run = grokking.train_grokking(config, progress=False, stop_after_solved=100)
    train_at, test_at = run.grok_steps
    return {"seconds": round(run.seconds, 1), "steps": run.history[-1]["step"] + 1,
            "step_99_train": train_at, "step_99_test": test_at,
            "final_test_accuracy": run.history[-1].get("test_accuracy"), "target_seconds": 60}


def machine() -> str:
    return (f"{platform.machine()}, {os.cpu_count()} cores, torch threads {torch.get_num_threads()}, "
            f"{psutil.virtual_memory().total / 2**30:.0f} GiB, Python {platform.python_version()}, torch {torch.__version__}")


def write_markdown(results: dict) -> None:
    lines = ["# Benchmark results", "", f"Measured {results['date']} on: {results['machine']}.",
             "Re-run with `./course bench`; method in `benchmarks/run_benchmarks.py`.", "",
             "| what | wall time (s) | target (s) | peak memory (MB) | target (MB) |", "|---|---|---|---|---|"]
    for name, r in results.get("notebooks", {}).items():
        lines.append(f"| notebook {name} | {r['seconds']} | {r['target_seconds']} | {r['peak_mb']} | {r['target_mb']} |")
    for name, r in results.get("recipes", {}).items():
        lines.append(f"| recipe {name} (whole build / training loop) | {r['seconds']} / {r['train_loop_seconds']} | "
                     f"{r['target_seconds']} | | |")
    for name, r in results.get("in_notebook", {}).items():
        lines.append(f"| in-notebook training, {name} ({r['steps']} steps; 99% test accuracy at step "
                     f"{r['step_99_test']}) | {r['seconds']} | {r['target_seconds']} | | |")
    from mechinterp_course import models

    for name in models.list_zoo():
        card = models.card(name)
        lines.append(f"| zoo {name}: training time recorded in its card ({card.get('trained_on')}) | "
                     f"{card.get('train_seconds')} | | | |")
    RESULTS_MD.write_text("\n".join(lines) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", choices=["notebooks", "recipes"])
    parser.add_argument("--recipe", action="append", metavar="NAME",
                        help="time this recipe (repeatable; default: the recipes with a target, the quick ones)")
    args = parser.parse_args()
    results = {"date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"), "machine": machine()}
    if args.only in (None, "notebooks"):
        results["notebooks"] = {}
        for path in sorted((ROOT / "solutions").glob("*/*.ipynb")):
            results["notebooks"][path.parent.name] = bench_notebook(path)
            print(path.parent.name, results["notebooks"][path.parent.name], flush=True)
    if args.only in (None, "recipes"):
        from mechinterp_course import recipes

        results["recipes"] = {}
        for name in args.recipe or sorted(RECIPE_TARGETS):
            if name not in recipes.RECIPES:
                parser.error(f"unknown recipe {name!r}; known: {sorted(recipes.RECIPES)}")
            results["recipes"][name] = bench_recipe(name)
            print(name, results["recipes"][name], flush=True)
    if args.only in (None, "recipes"):
        results["in_notebook"] = {"grokking p=59": bench_in_notebook_grokking()}
        print(results["in_notebook"], flush=True)
    previous = json.loads(RESULTS_JSON.read_text()) if RESULTS_JSON.exists() else {}
    for key in ("notebooks", "recipes", "in_notebook"):
        results[key] = {**previous.get(key, {}), **results.get(key, {})}
    RESULTS_JSON.write_text(json.dumps(results, indent=2) + "\n")
    write_markdown(results)


if __name__ == "__main__":
    main()
