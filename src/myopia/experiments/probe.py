"""``myopia probe``: future-token linear probes compared across models (vanilla vs myopic vs myopic-hidden).

Every model is probed on the same windows: probes are trained on ``train_split`` windows and scored on
``eval_split`` windows (default val -> test, both held out from language-model training). Models must share a
tokenizer. Writes ``probe.json`` and, with matplotlib, ``probe.png`` (:mod:`myopia.plots.probes`).
"""

from __future__ import annotations

from pathlib import Path

import torch

from ..data import LMTask, load_corpus
from ..data.tokenizer import check_model_tokenizer
from ..arms import PAIR_ARMS
from ..errors import MyopiaError
from ..io import provenance, write_json
from ..probes import probe_model
from ..rundir import CONFIG, load_model



def pair_models(pair_dir: str | Path) -> dict[str, str]:
    """The arms present in a pair / finetune directory: ``{arm: run dir}``."""
    pair_dir = Path(pair_dir)
    found = {arm: str(pair_dir / arm) for arm in PAIR_ARMS if (pair_dir / arm / CONFIG).exists()}
    if not found:
        raise MyopiaError(f"{pair_dir} holds none of the run directories {', '.join(PAIR_ARMS)}")
    return found


def split_windows(corpus, seq_len: int, split: str, windows: int) -> torch.Tensor:
    """The first ``windows`` windows of ``seq_len + 1`` tokens of a split, (N, seq_len + 1)."""
    task = LMTask(corpus, seq_len, eval_split=split, eval_tokens=windows * seq_len)
    x, y = task.eval_windows()
    if len(x) < 1:
        raise MyopiaError(f"the {split} split holds no window of {seq_len} tokens")
    return torch.cat([x, y[:, -1:]], dim=1)[:windows]


def _progress(name: str, index: int, total: int):
    """A line on stderr per layer probed: which model of how many, which layer."""
    import sys

    return lambda line: print(f"probe: model {index} of {total} ({name}), {line}", file=sys.stderr, flush=True)


def probe_comparison(models: dict[str, str], data: str | Path, out: str | Path, *, layers: str = "all",
                     ks=(1, 2, 3, 4), train_split: str = "val", eval_split: str = "test", windows: int = 64,
                     seq_len: int = 64, classes: int = 1024, steps: int = 100, lr: float = 1.0,
                     seed: int = 0, device: str = "cpu", plot: bool = True, data_opts: dict | None = None,
                     tokenizer_spec: str | None = None) -> dict:
    """Probe each model ``{name: checkpoint}``; returns (and writes) the summary.

    ``data_opts`` are :func:`myopia.data.load_corpus` options; ``tokenizer_spec``, when given, must name the
    models' own tokenizer."""
    if train_split == eval_split:
        raise MyopiaError("train and eval splits of the probes must differ")
    results, fingerprint, corpus, info = {}, None, None, {}
    for name, spec in models.items():
        model, tokenizer, meta = load_model(spec, device=device)
        model.float()
        check_model_tokenizer(tokenizer_spec, tokenizer, name)
        if fingerprint is None:
            fingerprint = tokenizer.fingerprint()
            corpus = load_corpus(data, tokenizer, **(data_opts or {}))
            train_w = split_windows(corpus, seq_len, train_split, windows)
            test_w = split_windows(corpus, seq_len, eval_split, windows)
        elif tokenizer.fingerprint() != fingerprint:
            raise MyopiaError(f"{name} uses a different tokenizer from the first model; probes are not comparable")
        if seq_len > model.cfg.seq_len:
            raise MyopiaError(f"seq-len {seq_len} exceeds {name}'s context {model.cfg.seq_len}")
        n_layer = model.cfg.n_layer
        chosen = list(range(n_layer + 1)) if layers == "all" else sorted({int(v) for v in str(layers).split(",")})
        if any(not 0 <= layer <= n_layer for layer in chosen):
            raise MyopiaError(f"layers must lie in 0..{n_layer} for {name}")
        results[name] = {
            "checkpoint": str(spec), "kind": meta["kind"], "step": meta.get("step"),
            "trained_gradient": getattr(model.cfg, "gradient", None),
            "layers": {str(layer): {str(k): r for k, r in per_k.items()} for layer, per_k in probe_model(
                model, train_w, test_w, layers=chosen, ks=list(ks), device=device, classes=classes,
                steps=steps, lr=lr, seed=seed, log=_progress(name, len(results) + 1, len(models))).items()},
        }
        info[name] = n_layer
        del model
    summary = {"data": str(data), "train_split": train_split, "eval_split": eval_split, "seq_len": seq_len,
               "windows": {"train": int(len(train_w)), "eval": int(len(test_w))}, "ks": list(ks),
               "probe": {"classes": classes, "solver": "L-BFGS", "max_iterations": steps, "lr": lr, "seed": seed,
                         "weight_decay_selection": "best of 1e-4, 1e-3, 1e-2 on the last 20% of training pairs"},
               "models": results, **provenance()}
    out = Path(out)
    write_json(out / "probe.json", summary)
    if plot:
        from ..plots.probes import plot_probe

        plot_probe(summary, out / "probe.png")
    return summary
