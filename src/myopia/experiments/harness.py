"""``myopia harness``: every arm and seed through lm-evaluation-harness, paired per document into gaps.

Each model is evaluated with ``lm_eval.simple_evaluate`` (model type ``hf``, sample logging on): our runs as
exported GPT-NeoX directories (:func:`myopia.hf.export.export_run`, cached in ``OUT/harness/models``), fine-tune
arms from their ``hf/`` folders, Hugging Face directories as they are. The per-sample metrics (``acc``,
``acc_norm``, ... and the log-likelihood of the gold answer where the request type gives one) are paired across
arms by ``doc_id``, and every task gets per metric the gap arm - baseline over documents with the
seed-inclusive interval of :func:`myopia.analysis.stats.paired_gap`. Writes ``OUT/harness.json``.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np

from ..analysis.stats import holm, paired_gap
from ..errors import MyopiaError
from ..io import provenance, read_json, write_json
from ..pairdir import PairDir
from ..rundir import is_run, parse_runs, run_kind, training_corpus

HARNESS_JSON = "harness.json"
INSTALL = 'lm-evaluation-harness is not installed: pip install -e ".[eval]" (or pip install "lm-eval[hf]")'


def import_lm_eval():
    """(lm_eval, its TaskManager); a clear error saying how to install it when it is missing."""
    try:
        import lm_eval
        from lm_eval.tasks import TaskManager
    except ImportError:
        raise MyopiaError(INSTALL) from None
    return lm_eval, TaskManager


def harness_version() -> str:
    """The installed lm-eval version."""
    from importlib.metadata import version

    return version("lm_eval")


def check_harness_tasks(task_manager, tasks: list[str]) -> None:
    """Refuse a task name lm-eval does not know (neither registered nor under --include-path)."""
    known = set(task_manager.all_tasks)
    bad = [t for t in tasks if t not in known]
    if bad:
        raise MyopiaError(f"unknown lm-eval task {bad[0]!r} (not in lm-eval's registry nor in --include-path)")


# --------------------------------------------------------------------------------------------------------------
# Models as transformers directories
# --------------------------------------------------------------------------------------------------------------


def _save_corpus_tokenizer(run: Path, out_dir: Path) -> None:
    """A ``PreTrainedTokenizerFast`` for a run trained with our BPE tokenizer (the export only writes bytes)."""
    from transformers import PreTrainedTokenizerFast

    corpus = training_corpus(run)
    tok = getattr(corpus, "tokenizer", None) if corpus is not None else None
    if tok is None or not hasattr(tok, "tok"):
        raise MyopiaError(f"{run}: cannot find the tokenizer it was trained with (its token cache is gone)")
    from ..data.tokenizer import EOS_TEXT

    PreTrainedTokenizerFast(tokenizer_object=tok.tok, eos_token=EOS_TEXT).save_pretrained(out_dir)


def hf_directory(path: Path, cache: Path) -> Path:
    """A directory ``AutoModelForCausalLM``/``AutoTokenizer`` load for ``path`` (run of ours: exported into
    ``cache`` once; finetune run: its ``hf/``; anything else: itself)."""
    from ..hf.export import export_run

    path = Path(path)
    if not is_run(path):
        return path
    if run_kind(path) == "hf":
        if not (path / "hf").is_dir():
            raise MyopiaError(f"{path} is a finetune run without its hf/ folder")
        return path / "hf"
    marker = cache / "myopia_export.json"
    if marker.is_file() and read_json(marker).get("source_run") == str(path):
        return cache
    if cache.exists():
        import shutil

        shutil.rmtree(cache)
    summary = export_run(path, cache)
    if summary["tokenizer"] is None:
        _save_corpus_tokenizer(path, cache)
    return cache


# --------------------------------------------------------------------------------------------------------------
# Per-sample values
# --------------------------------------------------------------------------------------------------------------


def _number(x):
    if isinstance(x, bool):
        return float(x)
    if isinstance(x, (int, float, np.floating, np.integer)) and math.isfinite(float(x)):
        return float(x)
    return None


def gold_loglikelihood(sample: dict):
    """Log-likelihood of the gold answer: a multiple-choice sample's target choice, a loglikelihood request's
    continuation, a rolling request's document; None when the request type gives none."""
    fr = sample.get("filtered_resps")
    try:
        if isinstance(fr, (int, float)):
            return _number(fr)
        if isinstance(fr, (list, tuple)) and fr:
            if isinstance(fr[0], (list, tuple)):  # one (ll, is_greedy) per choice
                t = sample.get("target")
                idx = int(t) if not isinstance(t, (list, tuple)) else None
                if idx is not None and 0 <= idx < len(fr):
                    return _number(fr[idx][0])
                return None
            if len(fr) == 2 and isinstance(fr[1], bool):  # (ll, is_greedy)
                return _number(fr[0])
            if len(fr) == 1:
                return _number(fr[0])
    except (TypeError, ValueError):
        return None
    return None


def sample_values(samples: list[dict]) -> dict[str, dict[str, float]]:
    """{metric: {doc_id: value}} of the scalar per-sample metrics, plus ``loglikelihood`` where defined."""
    out: dict[str, dict[str, float]] = {}
    for s in samples:
        doc = str(s["doc_id"])
        for m in s.get("metrics", []):
            v = _number(s.get(m))
            if v is not None:
                out.setdefault(m, {})[doc] = v
        ll = gold_loglikelihood(s)
        if ll is not None:
            out.setdefault("loglikelihood", {})[doc] = ll
    return out


# --------------------------------------------------------------------------------------------------------------
# The driver
# --------------------------------------------------------------------------------------------------------------


FINETUNE_JSON = "finetune.json"  # written by myopia finetune beside its arms' run folders


def finetune_arms(folder: Path) -> tuple[list[str], dict[str, list[Path]], str]:
    """The arms of a ``myopia finetune`` folder (one run folder per arm, one seed), vanilla first as the baseline."""
    summary = read_json(folder / FINETUNE_JSON)
    arms = [a for a in summary.get("arms", {}) if (folder / a).is_dir()]
    if "vanilla" not in arms:
        raise MyopiaError(f"{folder}: the fine-tune has no finished vanilla arm to compare with")
    arms = ["vanilla"] + [a for a in arms if a != "vanilla"]
    return arms, {a: [folder / a] for a in arms}, "vanilla"


def harness_arms(pair_dir=None, runs=None, baseline=None) -> tuple[list[str], dict[str, list[Path]], str]:
    """(arms, baseline first; {arm: one model path per seed}; the baseline) of a pair folder or of ``--runs``."""
    if (pair_dir is None) == (not runs):
        raise MyopiaError("give either a pair directory or --runs (exactly one of them)")
    if pair_dir is not None and (Path(pair_dir) / FINETUNE_JSON).is_file():
        return finetune_arms(Path(pair_dir))
    if pair_dir is not None:
        pair = PairDir(pair_dir)
        arms, seeds, _ = pair.trained_arms()
        return arms, pair.run_paths(arms, seeds), "vanilla"
    paths = parse_runs(runs)
    baseline = baseline or next(iter(paths))
    if baseline not in paths:
        raise MyopiaError(f"--baseline {baseline!r} is not one of the --runs arms ({', '.join(paths)})")
    if len({len(v) for v in paths.values()}) != 1:
        raise MyopiaError("--runs: every arm needs the same number of seeds (comma-separated paths)")
    return [baseline] + [a for a in paths if a != baseline], paths, baseline


def _evaluate_arms(lm_eval, tm, arms, paths, tasks, out: Path, *, limit, device, batch_size, progress):
    """Every arm and seed through ``lm_eval.simple_evaluate``: (values: arm -> seed -> task -> metric -> {doc: v},
    direction: task -> metric -> higher is better (lm-eval's own flags), aggregate: lm-eval's task scores)."""
    values, direction, aggregate = {}, {}, {}
    for a in arms:
        for s, p in enumerate(paths[a]):
            hf_dir = hf_directory(p, out / "harness" / "models" / a / f"seed{s}")
            if progress:
                print(f"[harness] {a} seed {s + 1}/{len(paths[a])}: {hf_dir}", file=sys.stderr, flush=True)
            r = lm_eval.simple_evaluate(model="hf", model_args=f"pretrained={hf_dir},dtype=float32",
                                        tasks=tasks, task_manager=tm, log_samples=True, limit=limit,
                                        device=device, batch_size=batch_size, bootstrap_iters=0)
            values.setdefault(a, []).append({t: sample_values(r["samples"][t]) for t in r["samples"]})
            for t, per_metric in (r.get("higher_is_better") or {}).items():
                direction.setdefault(t, {}).update({m: bool(v) for m, v in per_metric.items()})
            aggregate.setdefault(a, []).append({t: {k: _number(v) for k, v in res.items() if _number(v) is not None}
                                                for t, res in r["results"].items()})
    return values, direction, aggregate


def run_harness(pair_dir=None, *, tasks, runs=None, baseline=None, out=None, include_path=None,
                limit: int | None = None, batch_size: int = 8, device: str = "cpu", n_boot: int = 2000,
                progress: bool = True) -> dict:
    """Evaluate every arm and seed on lm-eval ``tasks``; write OUT/harness.json with the paired gaps."""
    lm_eval, TaskManager = import_lm_eval()
    tasks = [t.strip() for t in (tasks.split(",") if isinstance(tasks, str) else tasks) if t.strip()]
    if not tasks:
        raise MyopiaError("--tasks needs at least one lm-eval task name")
    if include_path is not None and not Path(include_path).exists():
        raise MyopiaError(f"--include-path {include_path} does not exist")
    if runs and out is None:
        raise MyopiaError("--runs needs --out (the folder for harness.json)")
    arms, paths, base = harness_arms(pair_dir, runs, baseline)
    out = Path(out if out is not None else pair_dir)
    tm = TaskManager(include_path=str(include_path) if include_path else None)
    check_harness_tasks(tm, tasks)
    S = len(paths[base])
    values, direction, aggregate = _evaluate_arms(lm_eval, tm, arms, paths, tasks, out, limit=limit, device=device,
                                                  batch_size=batch_size, progress=progress)
    results = {}
    for t in values[base][0]:
        metrics = {}
        for m in values[base][0][t]:
            docs = set(values[base][0][t][m])
            for a in arms:
                for per_seed in values[a]:
                    docs &= set(per_seed.get(t, {}).get(m, {}))
            docs = sorted(docs, key=lambda d: (len(d), d))
            if not docs:
                continue

            def matrix(arm):
                return np.asarray([[per_seed[t][m][d] for d in docs] for per_seed in values[arm]])

            b = matrix(base)
            entry = {"baseline": {"mean": float(b.mean()), "per_seed": [float(x) for x in b.mean(1)]}, "gap": {},
                     "higher_is_better": True if m == "loglikelihood" else direction.get(t, {}).get(m)}
            for a in arms:
                if a != base:
                    g = paired_gap(matrix(a), b, n_boot=n_boot)
                    g["p_holm"] = None
                    entry["gap"][a] = g
                    entry.setdefault("value", {})[a] = {"mean": float(matrix(a).mean())}
            metrics[m] = {**entry, "n": len(docs)}
        results[t] = {"n": max((v["n"] for v in metrics.values()), default=0), "metrics": metrics,
                      "gap": {a: {m: metrics[m]["gap"][a] for m in metrics} for a in arms if a != base}}
    slots = [g for r in results.values() for m in r["metrics"].values() for g in m["gap"].values()]
    for g, p in zip(slots, holm([g.get("p") for g in slots])):
        g["p_holm"] = p
    result = {
        "kind": "myopia-harness",
        "harness": {"name": "lm-evaluation-harness", "version": harness_version(), "model_type": "hf"},
        "harness_version": harness_version(),
        "tasks": results,
        "arms": arms,
        "baseline": base,
        "n_seeds": S,
        "aggregate": aggregate,
        "definition": "per-sample metric of each arm minus the baseline's on the same document (doc_id), same "
                      "seed; mean over documents and seeds; ci95 seed-inclusive (analysis.stats.paired_gap); "
                      "p_holm: Holm over every gap in this file. The sign is the metric's own: where "
                      "higher_is_better (accuracy, the gold answer's log-likelihood) a negative gap means the arm "
                      "does worse; gap.json and tasks.json gaps are losses, where positive means worse",
        "config": {"pair_dir": str(pair_dir) if pair_dir else None,
                   "runs": {a: [str(p) for p in ps] for a, ps in paths.items()}, "tasks": tasks,
                   "include_path": str(include_path) if include_path else None, "limit": limit,
                   "batch_size": batch_size, "n_boot": n_boot},
        **provenance(),
    }
    write_json(out / HARNESS_JSON, result)
    return result
