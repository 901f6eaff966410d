"""``myopia bonus DIR``: the local myopia bonus of a pair's vanilla model.

The *local* model re-trains only the computation at the present position: for every layer, each query reads
the keys/values of earlier positions from the frozen vanilla model (``model(x, past_kv=kv)`` with ``kv``
collected by ``vanilla(x, kv_out=kv)`` under no_grad), and its own position's key/value and everything else
from the trainee. The bonus is loss(vanilla) - loss(local): how much present performance vanilla training
gives up for the future. Decomposition (per myopic arm): gap = (myopic - local) - (vanilla - local).

Trainees (folders under ``DIR/bonus/``), each with its **control** (the same weights at the start, the same
examples in the same order, the same schedule and stopping rule, the ordinary vanilla gradient):

- ``local`` (``--init vanilla``, default): starts from the vanilla weights (so at step 0 it *is* vanilla) and
  continues vanilla's example stream where the pair stopped (unseen examples while the pair was within its first
  epoch; the result says how many were repeats). Control ``continued``.
- ``local-scratch`` (``--init scratch``, as in the paper): the pair's initialisation and example stream from
  the start (the pair's own training data, by design). Control ``scratch-control``.

Because extra training alone lowers the loss of an unconverged model, ``bonus_vs_control`` = loss(control) -
loss(local) separates freezing the past from more training. A control scored with its *own* past mixes a
better past into that comparison, so every control is also scored with the **original vanilla's frozen past**
(``local_scorer(control, vanilla)``, named ``<control>@vanilla-past``): ``bonus_vs_control_vanilla_past`` =
loss(control@vanilla-past) - loss(local) compares two present-position computations on the same past.

The bonus phase trains until its validation loss plateaus: constant learning rate after a 1% warmup, an
evaluation every ``eval_every`` steps, and a stop once the best validation loss has improved by less than
``min_delta`` nats/token over the last ``patience`` evaluations, or at the cap ``steps`` (``patience=0``: a
fixed ``steps`` with the pair's cosine schedule). The data order of a seed is that seed's stream, so seeds differ
in order and the bonus gets a training-noise interval like the gap.

Writes ``DIR/bonus.json`` and ``DIR/bonus/per_token.npz``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch

from ..analysis.gap import REQUIRED
from ..analysis.stats import Estimate, HierarchicalBootstrap, training_noise_note
from ..analysis.heldout import document_windows, evaluate_per_token, model_scorer
from ..checkpoint import has_checkpoint
from ..data import LMTask
from ..errors import MyopiaError
from ..io import exclusive_writer, provenance, read_json, read_jsonl, write_json
from ..lm import build_model
from ..model import flops_per_token
from ..pairdir import BONUS_ARRAYS as ARRAYS
from ..pairdir import BONUS, PairDir
from ..rundir import BONUS_JSON, CONFIG, METRICS, MODEL, RESULT, load_run_model
from ..train import TrainConfig, train

TRAINEES = {"vanilla": "local", "scratch": "local-scratch"}
CONTROLS = {"local": "continued", "local-scratch": "scratch-control"}
VANILLA_PAST = "@vanilla-past"
PHASE_JSON = "phase.json"


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
        """(B, T, vocab) logits of ``model`` on x (B, T) with every earlier position's keys/values frozen."""
        return model(x, past_kv=self.past(x, doc), doc_ids=doc)

    def describe(self) -> dict:
        """The task's record for config.json (marked ``lm-local``)."""
        return {**super().describe(), "kind": "lm-local", "past": "frozen vanilla keys/values"}


def local_scorer(trainee, frozen):
    """A scorer x (B, T) -> (B, T, vocab) logits of ``trainee`` reading the past keys/values of ``frozen``."""
    trainee.eval()
    frozen.eval()

    def score(x):
        kv: list = []
        frozen(x, kv_out=kv)
        return trainee(x, past_kv=kv)

    return score


class Plateau:
    """The stopping rule: stop once the best validation loss has improved by less than ``min_delta`` over the last
    ``patience`` evaluations (``patience`` 0: never). ``history`` seeds it with earlier (step, loss) evaluations."""

    def __init__(self, patience: int = 3, min_delta: float = 0.002, history=()):
        self.patience, self.min_delta = int(patience), float(min_delta)
        self.losses = [float(loss) for _, loss in history]

    def __call__(self, step: int, loss: float) -> bool:
        self.losses.append(float(loss))
        if self.patience <= 0 or len(self.losses) <= self.patience:
            return False
        before = min(self.losses[:-self.patience])
        return before - min(self.losses[-self.patience:]) < self.min_delta

    def describe(self) -> str:
        """The rule in words, for phase.json and the report."""
        if self.patience <= 0:
            return "fixed number of steps (no plateau rule)"
        return (f"stop when the best validation loss improved by < {self.min_delta:g} nats/token over the last "
                f"{self.patience} evaluations, or at the cap")


def _train_arm(name: str, model, task, cfg: TrainConfig, out: Path, run_config: dict, progress: bool,
               rule: Plateau | None = None) -> dict:
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
    if rule is not None:  # a fresh rule per run; a resumed run's rule remembers its earlier evaluations
        history = ([(r["step"], r["eval_loss"]) for r in read_jsonl(out / METRICS) if "eval_loss" in r]
                   if resume and (out / METRICS).is_file() else [])
        rule = Plateau(rule.patience, rule.min_delta, history)
    if progress:
        print(f"[bonus] {'resuming' if resume else 'training'} {name} -> {out}", file=sys.stderr, flush=True)
    return train(model, task, cfg, out, run_config=run_config, resume=resume,
                 flops_per_example=flops_per_token(model.cfg) * model.cfg.seq_len,
                 stop_when=rule if rule is not None and rule.patience > 0 else None)


def data_freshness(corpus, seq_len: int, seed: int, pair_examples: int, offset: int, examples: int) -> dict:
    """How many of the bonus phase's ``examples`` (starting at ``offset`` of seed ``seed``'s stream) are windows the
    pair already trained on (its first ``pair_examples`` examples)."""
    task = LMTask(corpus, seq_len, seed=seed, eval_tokens=seq_len)
    n = task.n_windows
    seen = np.zeros(n, dtype=bool)
    if pair_examples >= n:
        seen[:] = True
    elif pair_examples > 0:
        seen[task._window_starts(np.arange(pair_examples)) // seq_len] = True
    used = task._window_starts(np.arange(offset, offset + examples)) // seq_len
    repeats = int(seen[used].sum())
    within = len(np.unique(used))
    return {"examples": int(examples), "repeats_of_pair_data": repeats, "distinct_windows": int(within),
            "train_windows": int(n), "unseen": repeats == 0,
            "note": ("every example is a window the pair never trained on" if repeats == 0 else
                     f"{repeats} of {examples} examples are windows the pair already trained on (repeats)")}


def run_bonus(pair_dir, *, init: str = "vanilla", steps: int | None = None, lr: float | None = None,
              control: bool = True, split: str = "test", max_docs: int | None = None, n_boot: int = 2000,
              patience: int = 3, min_delta: float = 0.002, eval_every: int | None = None,
              device: str = "cpu", progress: bool = True, evaluate: bool = True) -> dict:
    """Train the local trainee (and its control) for every seed of the pair; write bonus.json.

    ``steps`` is the cap of the bonus phase; with ``patience`` > 0 each run stops earlier at a validation plateau
    (see :class:`Plateau`), evaluated every ``eval_every`` steps (default: the pair's, at most steps / 10).
    What the phase did is kept in ``DIR/bonus/<trainee>/phase.json``; ``evaluate=False`` trains only (a later
    ``myopia bonus`` or :func:`evaluate_bonus` scores every trainee found).
    """
    if init not in TRAINEES:
        raise MyopiaError(f"--init must be vanilla or scratch, got {init!r}")
    if patience < 0 or min_delta < 0:
        raise MyopiaError("--patience and --min-delta must be non-negative")
    pair = PairDir(pair_dir)
    corpus = pair.corpus()
    arms, seeds, _ = pair.trained_arms()
    pair_train = pair.manifest["train"]
    pair_steps = int(pair_train["steps"])
    steps = int(steps) if steps is not None else (max(1, pair_steps // 4) if init == "vanilla" else pair_steps)
    if steps < 1:
        raise MyopiaError(f"--steps must be at least 1, got {steps}")
    lr = float(lr) if lr is not None else (pair_train["lr"] / 4 if init == "vanilla" else pair_train["lr"])
    every = int(eval_every) if eval_every else max(1, min(int(pair_train.get("eval_every") or steps),
                                                        max(1, steps // 10)))
    trainee_name = TRAINEES[init]
    control_name = CONTROLS[trainee_name] if control else None
    rule = Plateau(patience, min_delta)
    schedule = {"steps": steps, "lr": lr, "seed": 0, "device": device, "progress": progress, "warmup_steps": -1,
                "eval_every": every, "ckpt_every": every}
    if patience > 0:
        schedule["min_lr_ratio"] = 1.0  # a constant rate: "plateau" then means the data, not the schedule

    freshness, stopped, plateaued = {}, {}, {}
    for seed in seeds:
        cfg = TrainConfig.from_dict({**pair_train, **schedule, "seed": seed})
        results, freshness[str(seed)] = _train_seed(pair, seed, init, trainee_name, control_name, cfg, rule,
                                                    progress)
        for name, res in results.items():
            stopped.setdefault(name, {})[str(seed)] = res["steps"]
            plateaued.setdefault(name, {})[str(seed)] = bool(res.get("stopped_early"))
    phase = {"init": init, "cap_steps": steps, "lr": lr, "eval_every": every, "stopping": rule.describe(),
             "schedule": "constant after 1% warmup" if patience > 0 else "the pair's cosine schedule",
             "steps_taken": stopped, "stopped_at_plateau": plateaued,
             "control": control_name,
             "data": freshness if init == "vanilla" else {
                 "note": "from scratch the trainee reads the pair's own training stream from the start (the same "
                         "examples as the arms it is compared with, by design)"},
             "data_order": "each seed's own example stream (orders differ across seeds)"}
    write_json(pair.path / BONUS / trainee_name / PHASE_JSON, phase)
    if not evaluate:
        return {"phases": {trainee_name: phase}}
    return evaluate_bonus(pair_dir, split=split, max_docs=max_docs, n_boot=n_boot, device=device,
                          progress=progress, settings={"init": init, "steps": steps, "lr": lr, "control": control})


def _train_seed(pair: PairDir, seed: int, init: str, trainee_name: str, control_name: str | None,
                cfg: TrainConfig, rule: Plateau, progress: bool) -> tuple[dict, dict]:
    """Train the trainee (and the control, unless ``control_name`` is None) of one seed: ({name: result}, how
    fresh the trainee's examples were)."""
    corpus = pair.corpus()
    seq_len = pair.seq_len
    eval_tokens = int(pair.manifest.get("eval_tokens", 65536))
    vdir = pair.run("vanilla", seed)
    pair_examples = int(read_json(vdir / RESULT)["examples_seen"])
    offset = pair_examples if init == "vanilla" else 0
    run_config = {"command": "bonus", "trainee": trainee_name, "init": init, "pair_dir": str(pair.path),
                  "vanilla_run": str(vdir), "example_offset": offset, "model": pair.manifest["model"],
                  "stopping": rule.describe()}
    frozen = load_run_model(vdir, corpus=corpus, finished=True)
    trainee = build_model(frozen.cfg, seed)
    if init == "vanilla":
        trainee.load_state_dict(frozen.state_dict())
    task = LocalTask(corpus, seq_len, frozen, seed=seed, eval_tokens=eval_tokens, example_offset=offset)
    results = {trainee_name: _train_arm(f"{trainee_name} seed {seed}", trainee, task, cfg,
                                        pair.bonus_run(trainee_name, seed), run_config, progress, rule)}
    freshness = data_freshness(corpus, seq_len, seed, pair_examples, offset,
                               int(results[trainee_name]["examples_seen"]))
    if control_name is not None:
        cont = (load_run_model(vdir, corpus=corpus, finished=True) if init == "vanilla"
                else build_model(frozen.cfg, seed))
        ctask = LMTask(corpus, seq_len, seed=seed, eval_tokens=eval_tokens, example_offset=offset)
        results[control_name] = _train_arm(
            f"{control_name} seed {seed}", cont, ctask, cfg, pair.bonus_run(control_name, seed),
            {**run_config, "trainee": control_name, "past": "own (ordinary vanilla gradient)"}, progress, rule)
    return results, freshness


def evaluate_bonus(pair_dir, *, split="test", max_docs=None, n_boot=2000, device="cpu", progress=True,
                   settings: dict | None = None) -> dict:
    """Evaluate vanilla, the trainees found under DIR/bonus, their controls (with their own and with vanilla's
    past) and the pair's arms on held-out documents; write bonus.json (+ per-token arrays)."""
    pair = PairDir(pair_dir)
    corpus = pair.corpus()
    arms, seeds, _ = pair.trained_arms()
    held = document_windows(corpus, split, pair.seq_len, max_docs=max_docs)
    _, overlap = pair.check_overlap(corpus, held.doc, what="myopia bonus")
    found = [n for n in ("local", "local-scratch", "continued", "scratch-control")
             if all((pair.bonus_run(n, s) / MODEL).is_file() for s in seeds)]
    pair.check_same_data(arms, seeds)
    with exclusive_writer(pair.path, "bonus results"):
        return _score_bonus_and_write(pair, arms, seeds, found, held, overlap, split=split, max_docs=max_docs,
                                      n_boot=n_boot, device=device, progress=progress, settings=settings)


def _score_bonus_and_write(pair: PairDir, arms, seeds, found, held, overlap, *, split, max_docs, n_boot, device,
                           progress, settings) -> dict:
    """Score every trainee, control and arm, analyse, and write bonus.json and its arrays (under the lock)."""
    local_names = [n for n in found if n.startswith("local")]
    if not local_names:
        raise MyopiaError(f"{pair.path}: no finished local trainee for every seed; run myopia bonus first")
    reused = pair.gap_scores(held, seeds, arms)
    losses = score_bonus(pair, arms, seeds, found, held, reused, device, progress)
    result = analyse_bonus(losses, held, local_names, n_boot=n_boot)
    phases = {n: read_json(pair.path / BONUS / n / PHASE_JSON) for n in local_names
              if (pair.path / BONUS / n / PHASE_JSON).is_file()}
    result = {"kind": "myopia-bonus", **result, "units": "nats/token", "seeds": seeds,
              "definition": "bonus = loss(vanilla) - loss(local); bonus_vs_control = loss(control) - loss(local); "
                            "bonus_vs_control_vanilla_past = loss(control scored with the original vanilla's "
                            "frozen past) - loss(local); gap = (myopic - local) - (vanilla - local)",
              "config": {"pair_dir": str(pair.path), "split": split, "max_docs": max_docs, "n_boot": n_boot,
                         "pair_arm_losses": "reused from gap/per_token.npz" if reused else "evaluated here",
                         "overlap": overlap,
                         **(settings or {}), "phases": phases, "model": pair.manifest["model"],
                         "pair_train": pair.manifest["train"]},
              **provenance()}
    arrays = {"doc": held.doc, "position": held.position, "target": held.target, "seeds": np.asarray(seeds)}
    arrays.update({f"loss.{n}": v for n, v in losses.items()})
    pair.save_arrays(ARRAYS, arrays)
    write_json(pair.path / BONUS_JSON, result)
    return result


def score_bonus(pair: PairDir, arms: list[str], seeds: list[int], found: list[str], held, reused: dict | None,
                device: str, progress: bool) -> dict[str, np.ndarray]:
    """{name: (seeds, N) float32} per-token losses of the pair's arms (taken from ``reused``, the gap's stored
    arrays of these tokens, when given), the trainees ``found`` and each control with vanilla's frozen past."""
    corpus = pair.corpus()
    controls = [n for n in found if n in CONTROLS.values()]
    names = arms + found + [c + VANILLA_PAST for c in controls]
    losses = {n: np.zeros((len(seeds), held.n_tokens), dtype=np.float32) for n in names}
    for si, seed in enumerate(seeds):
        vanilla = load_run_model(pair.run("vanilla", seed), device=device, corpus=corpus, finished=True)
        scorers = {} if reused else {
            a: model_scorer(load_run_model(pair.run(a, seed), device=device, corpus=corpus, finished=True))
            for a in arms}
        if reused:
            for a in arms:
                losses[a][si] = reused[f"loss.{a}"][si]
        for n in found:
            model = load_run_model(pair.bonus_run(n, seed), device=device, corpus=corpus, finished=True)
            if n.startswith("local"):
                scorers[n] = local_scorer(model, vanilla)
            else:
                scorers[n] = model_scorer(model)
                scorers[n + VANILLA_PAST] = local_scorer(model, vanilla)
        res = evaluate_per_token(scorers, held, vocab_size=corpus.vocab_size, device=device)
        for n in res:
            losses[n][si] = res[n]["loss"]
        if progress:
            print(f"[bonus] seed {seed}: " + ", ".join(f"{n} {losses[n][si].mean():.4f}" for n in names),
                  file=sys.stderr, flush=True)
    return losses


def analyse_bonus(losses: dict[str, np.ndarray], held, local_names: list[str], *, n_boot: int = 2000,
                  seed: int = 0) -> dict:
    """Bonus, bonus vs the control (own past and vanilla's past) and the gap decomposition, each with a
    seed-inclusive 95% interval (hierarchical bootstrap over seeds and documents; see myopia.analysis.stats)."""
    losses = {k: np.atleast_2d(np.asarray(v, dtype=np.float64)) for k, v in losses.items()}
    _, doc_index = np.unique(held.doc, return_inverse=True)
    S = losses["vanilla"].shape[0]
    boot = HierarchicalBootstrap(int(doc_index.max()) + 1, S, n_boot, seed)

    def stat(values):
        return boot.means(values, doc_index)

    def diff(a, b):
        return stat(losses[a] - losses[b]).summary()

    out = {"n_seeds": S, "training_noise": training_noise_note(S),
           "loss": {n: stat(v).summary() for n, v in losses.items()}, "trainees": {}}
    van = stat(losses["vanilla"])
    others = {"vanilla", "bigram"} | set(CONTROLS.values()) | {c + VANILLA_PAST for c in CONTROLS.values()}
    for local in local_names:
        entry = {"bonus": diff("vanilla", local)}
        rel = (stat(losses["vanilla"] - losses[local]) / van).summary()
        entry["relative_bonus"] = Estimate(rel["mean"], rel["ci95"]).to_dict()
        control = CONTROLS[local]
        if control in losses:
            entry["control"] = control
            entry["bonus_vs_control"] = diff(control, local)
            if local == "local":
                entry["bonus_vs_continued"] = entry["bonus_vs_control"]
            if control + VANILLA_PAST in losses:
                entry["bonus_vs_control_vanilla_past"] = diff(control + VANILLA_PAST, local)
        decomposition = {}
        for arm in [a for a in losses if a not in others and not a.startswith("local")]:
            decomposition[arm] = {"myopic_minus_local": diff(arm, local),
                                  "vanilla_minus_local": diff("vanilla", local),
                                  "gap": diff(arm, "vanilla")}
        for arm in REQUIRED:
            decomposition.setdefault(arm, None)
        entry["decomposition"] = decomposition
        out["trainees"][local] = entry
    return out
