"""``myopia grad``: the myopic/future gradient decomposition of one or more checkpoints on a fixed data sample.

Checkpoints: run directories of either kind (ours, ``myopia finetune`` arms), weights files inside them
(``snapshots/step_*.safetensors``, ``checkpoints/step_*`` folders), or Hugging Face directories / hub names (e.g. a
series of Pythia revisions). The sample is the first ``windows`` windows of ``seq_len`` tokens of a held-out
split (default ``val``), identical for every checkpoint of a series. Writes ``grad.json`` (numbers) and, with
matplotlib, ``grad.png`` (dynamics over the series; :mod:`myopia.plots.gradients`).
"""

from __future__ import annotations

from pathlib import Path

import torch

from ..data import LMTask, load_corpus
from ..data.tokenizer import check_model_tokenizer
from ..errors import MyopiaError
from ..gradsplit import PARTS, decomposition_stats
from ..io import provenance, read_json, write_json
from ..rundir import CONFIG, RESULT, SNAPSHOTS, load_model, run_dir_of


def expand_series(specs: list[str], snapshots: bool) -> list[str]:
    """With ``snapshots``, a run directory becomes its snapshots (in step order) followed by its final model."""
    out = []
    for spec in specs:
        path = Path(spec)
        snap_dir = path / SNAPSHOTS
        if snapshots and path.is_dir() and snap_dir.is_dir():
            snaps = sorted(snap_dir.glob("step_*.safetensors"))
            out.extend(str(p) for p in snaps)
            final_steps = read_json(path / RESULT).get("steps") if (path / RESULT).exists() else None
            if snaps and final_steps is not None and int(snaps[-1].stem.split("_")[1]) == int(final_steps):
                continue  # the last snapshot is the final model
        out.append(str(spec))
    return out


def _default_seq_len(spec: str, model) -> int:
    run_dir = run_dir_of(spec)
    if (run_dir / CONFIG).exists():
        cfg = read_json(run_dir / CONFIG)
        seq = cfg.get("task", {}).get("seq_len") or cfg.get("run", {}).get("seq_len")
        if seq:
            return int(seq)
    return min(64, int(model.cfg.seq_len))


def sample_windows(corpus, seq_len: int, split: str, windows: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The first ``windows`` consecutive windows of the split: inputs and targets (windows, seq_len)."""
    task = LMTask(corpus, seq_len, eval_split=split, eval_tokens=windows * seq_len)
    x, y = task.eval_windows()
    if len(x) < windows:
        raise MyopiaError(f"the {split} split holds only {len(x)} windows of {seq_len} tokens; asked for {windows}")
    return x[:windows], y[:windows]


def grad_decomposition(specs: list[str], data: str | Path, out: str | Path, *, split: str = "val",
                       windows: int = 16, seq_len: int | None = None, snapshots: bool = False,
                       device: str = "cpu", micro_batch: int = 16, plot: bool = True,
                       data_opts: dict | None = None, tokenizer_spec: str | None = None) -> dict:
    """Decompose each checkpoint's gradient on the same sample; returns (and writes) the summary.

    ``data_opts`` are :func:`myopia.data.load_corpus` options (documents, split fractions, ...);
    ``tokenizer_spec``, when given, must name each checkpoint's own tokenizer."""
    if windows < 1:
        raise MyopiaError("windows must be >= 1")
    series = expand_series(specs, snapshots)
    corpora: dict[str, object] = {}
    results, sample_info = [], None
    for spec in series:
        model, tokenizer, info = load_model(spec, device=device)
        model.float()
        check_model_tokenizer(tokenizer_spec, tokenizer, spec)
        fp = tokenizer.fingerprint()
        if fp not in corpora:
            corpora[fp] = load_corpus(data, tokenizer, **(data_opts or {}))
        T = seq_len or _default_seq_len(spec, model)
        x, y = sample_windows(corpora[fp], T, split, windows)
        if sample_info is None:
            sample_info = {"seq_len": T, "windows": windows, "tokens": int(y.numel()), "tokenizer": fp}
        with torch.no_grad():
            logits = torch.cat([model(x[i : i + micro_batch].to(device)).float().cpu()
                                for i in range(0, len(x), micro_batch)])
            loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1), y.flatten()).item()
        model.eval()  # no dropout: the gradient of the deterministic loss (gradient settings act in eval mode too)
        stats = decomposition_stats(model, x, y, PARTS, micro_batch=micro_batch)
        results.append({"checkpoint": spec, "kind": info["kind"], "step": info.get("step"), "seq_len": T,
                        "loss": loss, **stats})
        del model
    summary = {"data": str(data), "split": split, "sample": sample_info, "parts": list(PARTS),
               "definitions": {"future": "total - myopic", "share": "<part, total> / |total|^2"},
               "results": results, **provenance()}
    out = Path(out)
    write_json(out / "grad.json", summary)
    if plot:
        from ..plots.gradients import plot_grad

        plot_grad(summary, out / "grad.png")
    return summary
