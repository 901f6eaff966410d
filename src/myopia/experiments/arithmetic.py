"""The multiplication-with-filler grid: gradient settings × filler settings, exact-match accuracy.

Within one filler setting every gradient setting trains from the same initialisation on the same problems in
the same order and is scored on the same held-out problems (never trained on).
"""

from __future__ import annotations

import math
import sys
import time
from dataclasses import replace
from pathlib import Path

from ..errors import MyopiaError
from ..io import provenance, write_json
from ..model import GPTConfig
from ..rundir import RESULT
from ..synthetic.arithmetic import VOCAB, ArithmeticFormat, MultiplicationTask
from ..train import TrainConfig, train
from .train_lm import build_model


def wilson_interval(successes: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """95% Wilson score interval for a binomial proportion."""
    if n == 0:
        return (0.0, 1.0)
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return (max(0.0, centre - half), min(1.0, centre + half))


def run_arithmetic_grid(
    digits: int,
    fillers: list[int],
    gradients: list[str],
    model_cfg: GPTConfig,
    train_cfg: TrainConfig,
    out: str | Path,
    *,
    eval_problems: int = 1000,
    log=None,
) -> dict:
    """Train and score every (filler, gradient) pair; write out/result.json (and the run folders). Returns it.

    ``model_cfg`` gives the architecture (its vocab_size and seq_len are set from the task).
    """
    log = log or (lambda msg: print(msg, file=sys.stderr, flush=True))
    out = Path(out)
    if (out / RESULT).exists():
        raise MyopiaError(f"{out} already holds a result; choose another --out")
    t0 = time.perf_counter()
    result: dict = {"command": "arithmetic", "digits": digits, "fillers": list(fillers), "gradients": list(gradients),
                    "model": None, "train": train_cfg.to_dict(), "eval_problems": eval_problems,
                    "seed": train_cfg.seed, "accuracy": {}, "accuracy_ci95": {}, "digit_accuracy": {},
                    "answer_loss": {}, "train_time_s": {}, "runs": {}}
    for filler in fillers:
        fmt = ArithmeticFormat(digits=digits, filler=filler)
        key = f"filler={filler}"
        for name in ("accuracy", "accuracy_ci95", "digit_accuracy", "answer_loss", "train_time_s", "runs"):
            result[name][key] = {}
        for gradient in gradients:
            cfg = replace(model_cfg, vocab_size=len(VOCAB), seq_len=fmt.seq_len - 1, gradient=gradient)
            result["model"] = {k: v for k, v in cfg.to_dict().items() if k not in ("seq_len", "gradient")}
            task = MultiplicationTask(fmt, seed=train_cfg.seed, eval_problems=eval_problems)
            model = build_model(cfg, train_cfg.seed)
            run_dir = out / f"filler{filler}-{gradient}"
            log(f"[arithmetic N={digits} F={filler}] training {gradient} ({train_cfg.steps} steps) -> {run_dir}")
            r = train(model, task, train_cfg, run_dir,
                      run_config={"command": "arithmetic", "format": fmt.to_dict(), "model": cfg.to_dict()})
            ev = r["final_eval"]
            n_right = round(ev["accuracy"] * eval_problems)
            result["accuracy"][key][gradient] = ev["accuracy"]
            result["accuracy_ci95"][key][gradient] = wilson_interval(n_right, eval_problems)
            result["digit_accuracy"][key][gradient] = ev["digit_accuracy"]
            result["answer_loss"][key][gradient] = ev["loss"]
            result["train_time_s"][key][gradient] = r["train_time_s"]
            result["runs"][key][gradient] = str(run_dir)
            log(f"[arithmetic N={digits} F={filler}] {gradient}: exact match {ev['accuracy']:.3f}, digits "
                f"{ev['digit_accuracy']:.3f}, answer loss {ev['loss']:.4f} ({r['train_time_s']:.0f} s)")
    result["table"] = format_grid(result)
    result["wall_time_s"] = time.perf_counter() - t0
    result.update(provenance())
    from ..plots.report import accuracy_grid

    accuracy_grid(result, out / "accuracy.png")
    write_json(out / RESULT, result)
    return result


def format_grid(result: dict) -> str:
    """Exact-match accuracy table: one row per filler setting, one column per gradient setting."""
    gradients = result["gradients"]
    header = ["setting"] + [("myopic (strict)" if g == "myopic" else g) for g in gradients]
    rows = []
    for f in result["fillers"]:
        key = f"filler={f}"
        cells = []
        for g in gradients:
            lo, hi = result["accuracy_ci95"][key][g]
            cells.append(f"{result['accuracy'][key][g]:.3f} [{lo:.2f}, {hi:.2f}]")
        rows.append([f"N={result['digits']}, F={f}"] + cells)
    widths = [max(len(x) for x in col) for col in zip(header, *rows)]
    line = lambda cells: "  ".join(c.ljust(w) for c, w in zip(cells, widths)).rstrip()
    return "\n".join([line(header), line(["-" * w for w in widths])] + [line(r) for r in rows]
                     + [f"Greedy exact-match accuracy on {result['eval_problems']} held-out problems (95% Wilson CI)."])
