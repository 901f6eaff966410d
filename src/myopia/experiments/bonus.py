"""``myopia bonus DIR``: the local myopia bonus of a pair's vanilla model.

The *local* model re-trains only the computation at the present position: for every layer, each query reads
the keys/values of earlier positions from the frozen vanilla model (``model(x, past_kv=kv)`` with ``kv``
collected by ``vanilla(x, kv_out=kv)`` under no_grad), and its own position's key/value and everything else
from the trainee. The bonus is loss(vanilla) - loss(local): how much present performance vanilla training
gives up for the future. Decomposition (per myopic arm): gap = (myopic - local) - (vanilla - local).

Trainees (folders under ``DIR/bonus/``):

- ``local`` (``--init vanilla``, default): starts from the vanilla weights (so at step 0 it *is* vanilla) and
  continues on the next, unseen part of vanilla's example stream. Because extra training alone lowers the loss
  of an unconverged model, a **control** ``continued`` (vanilla trained on exactly the same examples with
  the same schedule, ordinary gradient) is trained too, and ``bonus_vs_continued`` = loss(continued) -
  loss(local) isolates the effect of freezing the past from that of more training.
- ``local-scratch`` (``--init scratch``, as in the paper): same initialisation, data order and budget as the
  pair's arms.

Writes ``DIR/bonus.json`` and ``DIR/bonus/per_token.npz``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch

from ..analysis.bootstrap import summary
from ..analysis.gap import REQUIRED, _clean, _ratio, _Stats
from ..analysis.heldout import document_windows, evaluate_per_token, model_scorer
from ..data import LMTask
from ..data.cache import open_cache
from ..errors import MyopiaError
from ..io import provenance, read_json, write_json
from ..model import flops_per_token
from ..checkpoint import has_checkpoint
from ..rundir import CONFIG, MODEL, RESULT, load_run_model
from ..train import TrainConfig, train
from .gap import ARRAYS as GAP_ARRAYS
from .gap import load_arrays, save_arrays, trained_arms
from .pair import read_manifest, resolve_cache, run_dir
from .train_lm import build_model

BONUS_JSON = "bonus.json"
ARRAYS = Path("bonus") / "per_token.npz"
TRAINEES = {"vanilla": "local", "scratch": "local-scratch"}


class LocalTask(LMTask):
    """Next-token prediction where every earlier position's keys/values come from a frozen model."""

    def __init__(self, corpus, seq_len: int, frozen: torch.nn.Module, **kw):
        super().__init__(corpus, seq_len, **kw)
        self.frozen = frozen.eval()
        for p in self.frozen.parameters():
            p.requires_grad_(False)

    def past(self, x: torch.Tensor, doc: torch.Tensor | None = None) -> list:
        """The frozen model's per-layer (k, v) for inputs x, (B, H, T, head_dim) each (documents ``doc``)."""
        if next(self.frozen.parameters()).device != x.device:
            self.frozen.to(x.device)
        kv: list = []
        with torch.no_grad():
            self.frozen(x, kv_out=kv, doc_ids=doc)
        return kv

    def logits(self, model, x: torch.Tensor, doc: torch.Tensor | None = None) -> torch.Tensor:
        return model(x, past_kv=self.past(x, doc), doc_ids=doc)

    def describe(self) -> dict:
        return {**super().describe(), "kind": "lm-local", "past": "frozen vanilla keys/values"}


def local_scorer(trainee, frozen):
    trainee.eval()
    frozen.eval()

    def score(x):
        kv: list = []
        frozen(x, kv_out=kv)
        return trainee(x, past_kv=kv)

    return score


def _train_arm(name: str, model, task, cfg: TrainConfig, out: Path, run_config: dict, progress: bool) -> dict:
    if (out / RESULT).is_file():
        saved = read_json(out / CONFIG)
        where = ("pair_dir", "vanilla_run")  # paths may change when a pair directory is moved or copied
        same_run = {k: v for k, v in saved["run"].items() if k not in where} == {
            k: v for k, v in run_config.items() if k not in where}
        if not same_run or saved["train"]["steps"] != cfg.steps or saved["train"]["lr"] != cfg.lr:
            raise MyopiaError(f"{out} holds a {name} run with different settings; delete it or use other settings")
        if progress:
            print(f"[bonus] {name}: already trained", file=sys.stderr)
        return read_json(out / RESULT)
    resume = has_checkpoint(out)
    if progress:
        print(f"[bonus] {'resuming' if resume else 'training'} {name} -> {out}", file=sys.stderr, flush=True)
    return train(model, task, cfg, out, run_config=run_config, resume=resume,
                 flops_per_example=flops_per_token(model.cfg) * model.cfg.seq_len)


def run_bonus(pair_dir, *, init: str = "vanilla", steps: int | None = None, lr: float | None = None,
              control: bool = True, split: str = "test", max_docs: int | None = None, n_boot: int = 2000,
              device: str = "cpu", progress: bool = True) -> dict:
    """Train the local trainee (and the control) for every seed of the pair; write bonus.json."""
    if init not in TRAINEES:
        raise MyopiaError(f"--init must be vanilla or scratch, got {init!r}")
    pair_dir = Path(pair_dir)
    manifest = read_manifest(pair_dir)
    corpus = open_cache(resolve_cache(pair_dir, manifest))
    arms, seeds, _ = trained_arms(manifest, pair_dir)
    pair_train = manifest["train"]
    pair_steps = int(pair_train["steps"])
    steps = int(steps) if steps is not None else (max(1, pair_steps // 4) if init == "vanilla" else pair_steps)
    lr = float(lr) if lr is not None else (pair_train["lr"] / 4 if init == "vanilla" else pair_train["lr"])
    trainee_name = TRAINEES[init]
    seq_len = int(manifest["model"]["seq_len"])
    eval_tokens = int(manifest.get("eval_tokens", 65536))

    trainees, controls = {}, {}
    for seed in seeds:
        vdir = run_dir(pair_dir, "vanilla", seed)
        vanilla_result = read_json(vdir / RESULT)
        offset = int(vanilla_result["examples_seen"]) if init == "vanilla" else 0
        cfg = TrainConfig.from_dict({**pair_train, "steps": steps, "lr": lr, "seed": seed, "device": device,
                                     "progress": progress, "warmup_steps": -1})
        run_config = {"command": "bonus", "trainee": trainee_name, "init": init, "pair_dir": str(pair_dir),
                      "vanilla_run": str(vdir), "example_offset": offset, "model": manifest["model"]}
        frozen = load_run_model(vdir, corpus=corpus, finished=True)
        trainee = build_model(frozen.cfg, seed)
        if init == "vanilla":
            trainee.load_state_dict(frozen.state_dict())
        task = LocalTask(corpus, seq_len, frozen, seed=seed, eval_tokens=eval_tokens, example_offset=offset)
        tdir = pair_dir / "bonus" / trainee_name / f"seed{seed}"
        _train_arm(f"{trainee_name} seed {seed}", trainee, task, cfg, tdir, run_config, progress)
        trainees[seed] = tdir
        if init == "vanilla" and control:
            cont = load_run_model(vdir, corpus=corpus, finished=True)
            ctask = LMTask(corpus, seq_len, seed=seed, eval_tokens=eval_tokens, example_offset=offset)
            cdir = pair_dir / "bonus" / "continued" / f"seed{seed}"
            _train_arm(f"continued seed {seed}", cont, ctask, cfg, cdir,
                       {**run_config, "trainee": "continued", "past": "own (ordinary vanilla gradient)"}, progress)
            controls[seed] = cdir
    return evaluate_bonus(pair_dir, split=split, max_docs=max_docs, n_boot=n_boot, device=device,
                          progress=progress, settings={"init": init, "steps": steps, "lr": lr,
                                                       "control": bool(controls)})


def evaluate_bonus(pair_dir, *, split="test", max_docs=None, n_boot=2000, device="cpu", progress=True,
                   settings: dict | None = None) -> dict:
    """Evaluate vanilla, the trainees found under DIR/bonus, the control and the pair's arms on held-out
    documents; write bonus.json (+ per-token arrays)."""
    pair_dir = Path(pair_dir)
    manifest = read_manifest(pair_dir)
    corpus = open_cache(resolve_cache(pair_dir, manifest))
    arms, seeds, _ = trained_arms(manifest, pair_dir)
    held = document_windows(corpus, split, int(manifest["model"]["seq_len"]), max_docs=max_docs)
    found = [n for n in ("local", "local-scratch", "continued")
             if all((pair_dir / "bonus" / n / f"seed{s}" / MODEL).is_file() for s in seeds)]
    local_names = [n for n in found if n.startswith("local")]
    if not local_names:
        raise MyopiaError(f"{pair_dir}: no finished local trainee for every seed; run myopia bonus first")
    names = arms + found
    losses = {n: np.zeros((len(seeds), held.n_tokens), dtype=np.float32) for n in names}
    reused = _gap_losses(pair_dir, held, seeds, arms)
    for si, seed in enumerate(seeds):
        vanilla = load_run_model(run_dir(pair_dir, "vanilla", seed), device=device, corpus=corpus, finished=True)
        scorers = {} if reused else {
            a: model_scorer(load_run_model(run_dir(pair_dir, a, seed), device=device, corpus=corpus, finished=True))
            for a in arms}
        if reused:
            for a in arms:
                losses[a][si] = reused[a][si]
        for n in found:
            model = load_run_model(pair_dir / "bonus" / n / f"seed{seed}", device=device, corpus=corpus, finished=True)
            scorers[n] = local_scorer(model, vanilla) if n.startswith("local") else model_scorer(model)
        res = evaluate_per_token(scorers, held, vocab_size=corpus.vocab_size, device=device)
        for n in res:
            losses[n][si] = res[n]["loss"]
        if progress:
            print(f"[bonus] seed {seed}: " + ", ".join(f"{n} {losses[n][si].mean():.4f}" for n in names),
                  file=sys.stderr, flush=True)
    result = analyse_bonus(losses, held, local_names, n_boot=n_boot)
    result = {"kind": "myopia-bonus", **result, "units": "nats/token", "seeds": seeds,
              "definition": "bonus = loss(vanilla) - loss(local); bonus_vs_continued = loss(continued) - "
                            "loss(local); gap = (myopic - local) - (vanilla - local)",
              "config": {"pair_dir": str(pair_dir), "split": split, "max_docs": max_docs, "n_boot": n_boot,
                         "pair_arm_losses": "reused from gap/per_token.npz" if reused else "evaluated here",
                         **(settings or {}), "model": manifest["model"], "pair_train": manifest["train"]},
              **provenance()}
    arrays = {"doc": held.doc, "position": held.position, "target": held.target, "seeds": np.asarray(seeds)}
    arrays.update({f"loss.{n}": v for n, v in losses.items()})
    save_arrays(pair_dir / ARRAYS, arrays)
    write_json(pair_dir / BONUS_JSON, result)
    return result


def _gap_losses(pair_dir: Path, held, seeds: list[int], arms: list[str]) -> dict | None:
    """The pair's per-token losses from ``myopia gap`` when it scored exactly these tokens with these seeds."""
    path = pair_dir / GAP_ARRAYS
    if not path.is_file():
        return None
    a = load_arrays(path)
    same = (a["seeds"].tolist() == list(seeds) and len(a["doc"]) == held.n_tokens
            and all(np.array_equal(a[k], getattr(held, k)) for k in ("doc", "position", "target"))
            and all(f"loss.{arm}" in a for arm in arms))
    return {arm: a[f"loss.{arm}"] for arm in arms} if same else None


def analyse_bonus(losses: dict[str, np.ndarray], held, local_names: list[str], *, n_boot: int = 2000,
                  seed: int = 0) -> dict:
    """Bonus, bonus vs the continued control, and the gap decomposition, each with a 95% interval."""
    losses = {k: np.atleast_2d(np.asarray(v, dtype=np.float64)) for k, v in losses.items()}
    stats = _Stats(held, losses["vanilla"].shape[0], n_boot, seed)

    def stat(values):
        p, reps, _ = stats.means(values)
        return p[0], reps[:, 0]

    def diff(a, b):
        p, reps = stat(losses[a] - losses[b])
        return _clean(summary(p, reps))

    out = {"loss": {n: _clean(summary(*stat(v))) for n, v in losses.items()}, "trainees": {}}
    van_p, van_reps = stat(losses["vanilla"])
    for local in local_names:
        entry = {"bonus": diff("vanilla", local)}
        bp, breps = stat(losses["vanilla"] - losses[local])
        entry["relative_bonus"] = _clean(_ratio(bp, breps, van_p, van_reps))
        if "continued" in losses and local == "local":
            entry["bonus_vs_continued"] = diff("continued", local)
        decomposition = {}
        for arm in [a for a in losses if a not in ("vanilla", "continued", "bigram") and not a.startswith("local")]:
            decomposition[arm] = {"myopic_minus_local": diff(arm, local),
                                  "vanilla_minus_local": diff("vanilla", local),
                                  "gap": diff(arm, "vanilla")}
        for arm in REQUIRED:
            decomposition.setdefault(arm, None)
        entry["decomposition"] = decomposition
        out["trainees"][local] = entry
    return out
