"""Run folders: the names of the files a run writes, its status, and loading its trained model.

A run folder (``myopia train``, each arm of a pair, a sweep point, ``myopia finetune``) holds:

- ``config.json`` (:data:`CONFIG`): the full configuration, under ``run`` (model, gradient, training) and ``task``
  (corpus, tokenizer, sequence length); ``run.model_kind == "hf"`` marks a Hugging Face fine-tune;
- ``metrics.jsonl`` (:data:`METRICS`): one JSON record per logged step or evaluation;
- ``checkpoints/step_XXXXXXX/`` (:data:`CHECKPOINTS`): the distributed checkpoints a resumed run continues from
  (the newest and the one before; see :mod:`myopia.checkpoint`); ``.lock`` (:data:`LOCK`) held by the writer.
  A folder with the single-file ``checkpoint.safetensors`` (:data:`CHECKPOINT`, :data:`PREVIOUS_CHECKPOINT`) was
  written by myopia < 0.2.0 and is refused with one line naming the version;
- ``model.safetensors`` (:data:`MODEL`): the final weights, written with ``result.json`` (:data:`RESULT`) when
  the run finishes; ``snapshots/step_*.safetensors`` when asked for; ``tokenizer/`` for Hugging Face runs.

:func:`load_run` rebuilds the model of either kind (our :class:`myopia.model.GPT`, or
:class:`myopia.hf.model.HFCausalLM`) from these files; :func:`load_model` also takes a weights file inside a run or
a Hugging Face directory / hub name. The file names (and those of the summaries that folders of several runs hold:
``pair.json``, ``gap.json``, ``bonus.json``, ``sweep.json``, ``horizon.json``) are spelled once, in
:mod:`myopia.runfiles`, and re-exported here; a pair folder is read by :class:`myopia.pairdir.PairDir`. Importing
this module does not import torch.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from .arms import GradientSetting
from .errors import MyopiaError, first_line
from .io import read_json
from .runfiles import (
    BONUS_JSON,
    CHECKPOINT,
    CHECKPOINTS,
    CONFIG,
    GAP_JSON,
    HORIZON_JSON,
    LOCK,
    METRICS,
    MODEL,
    PAIR_JSON,
    PREVIOUS_CHECKPOINT,
    RESULT,
    SNAPSHOTS,
    SWEEP_JSON,
    TOKENIZER,
)

if TYPE_CHECKING:  # importing this module does not import torch (plots and reports read the file names)
    import torch.nn as nn

STATUSES = ("new", "partial", "done")

__all__ = ["CONFIG", "METRICS", "RESULT", "MODEL", "CHECKPOINTS", "CHECKPOINT", "PREVIOUS_CHECKPOINT", "LOCK",
           "SNAPSHOTS", "TOKENIZER", "PAIR_JSON", "GAP_JSON", "BONUS_JSON", "SWEEP_JSON", "HORIZON_JSON",
           "Run", "is_run", "read_config", "run_status", "run_kind", "run_dir_of", "weights_file", "check_tokenizer",
           "load_run", "load_run_model", "run_tokenizer", "load_model",
           "parse_runs", "training_corpus", "data_identity", "check_same_data"]


@dataclass
class Run:
    """A loaded run: its folder, its ``config.json``, the model (eval mode) and the weights file's metadata."""

    path: Path
    config: dict
    model: nn.Module
    meta: dict

    @property
    def kind(self) -> str:
        """``"hf"`` (a ``myopia finetune`` run) or ``"gpt"`` (our own model)."""
        return "hf" if self.config.get("run", {}).get("model_kind") == "hf" else "gpt"

    @property
    def step(self) -> int | None:
        """The training step the loaded weights were saved at, when the file records it."""
        return self.meta.get("step")


def is_run(path: str | Path) -> bool:
    """Whether ``path`` is a run folder (a directory whose config.json has a ``run`` section)."""
    path = Path(path)
    return (path / CONFIG).is_file() and "run" in read_json(path / CONFIG)


def read_config(run_dir: str | Path) -> dict:
    """The run's ``config.json``; a clear error when ``run_dir`` is not a run folder."""
    run_dir = Path(run_dir)
    if not (run_dir / CONFIG).is_file():
        raise MyopiaError(f"{run_dir} is not a run directory (no {CONFIG})")
    return read_json(run_dir / CONFIG)


def run_status(run_dir: str | Path) -> str:
    """``done`` (result.json), ``partial`` (a checkpoint to resume) or ``new``."""
    run_dir = Path(run_dir)
    if (run_dir / RESULT).exists():
        return "done"
    from .checkpoint import has_checkpoint

    if has_checkpoint(run_dir):
        return "partial"
    return "new"


def run_kind(run_dir: str | Path) -> str:
    """``"hf"`` for a ``myopia finetune`` run, ``"gpt"`` for our own model, from the run's config.json."""
    run = read_json(Path(run_dir) / CONFIG).get("run", {})
    return "hf" if run.get("model_kind") == "hf" else "gpt"


def run_dir_of(weights: str | Path) -> Path:
    """The run folder a weights file belongs to: its folder, or the run above ``snapshots/``."""
    path = Path(weights)
    if path.is_dir():
        return path.parent.parent if path.parent.name == CHECKPOINTS else path
    return path.parent if (path.parent / CONFIG).exists() else path.parent.parent


def weights_file(run_dir: str | Path, weights: str | Path | None = None, *, finished: bool = False) -> Path:
    """The weights file to load: ``weights`` if given, else ``model.safetensors``, else (unless ``finished``) the
    latest training checkpoint."""
    run_dir = Path(run_dir)
    if weights is not None:
        return Path(weights)
    if finished:
        if not (run_dir / MODEL).is_file():
            raise MyopiaError(f"{run_dir} holds no finished run (no {MODEL})")
        return run_dir / MODEL
    if (run_dir / MODEL).exists():
        return run_dir / MODEL
    from .checkpoint import checkpoint_steps, refuse_old_run

    refuse_old_run(run_dir)
    for _, path in checkpoint_steps(run_dir):
        return path
    raise MyopiaError(f"{run_dir} holds no {MODEL} and no {CHECKPOINTS}/step_* folder (is it a run directory?)")


def check_tokenizer(config: dict, vocab_size: int, corpus, where) -> None:
    """Refuse data tokenized differently from what the run (``config``, ``vocab_size``) was trained on."""
    trained = config.get("task", {}).get("corpus", {}).get("tokenizer") or {}
    fp = trained.get("fingerprint")
    have = corpus.tokenizer.fingerprint() if corpus.tokenizer is not None else None
    if vocab_size != corpus.vocab_size or (fp and have and fp != have):
        kind = corpus.tokenizer.kind if corpus.tokenizer is not None else "raw ids"
        raise MyopiaError(
            f"tokenizer/vocabulary mismatch: {where} was trained on {trained.get('kind', '?')} tokens "
            f"(vocab {vocab_size}, fingerprint {fp}) but the data is {kind} tokens "
            f"(vocab {corpus.vocab_size}, fingerprint {have})")


def _build_model(run_dir: Path, run: dict) -> nn.Module:
    """A freshly built model of the run's kind and shape (untrained)."""
    if run.get("model_kind") == "hf":
        from .hf.model import HFCausalLM, hf_model_from_config

        if "hf_config" not in run:
            raise MyopiaError(f"{run_dir}/{CONFIG} lacks the Hugging Face config (hf_config)")
        model = HFCausalLM(hf_model_from_config(run["hf_config"]))
        model.set_gradient(GradientSetting.from_dict(run))
        return model
    from .model import GPT, GPTConfig

    if "model" not in run:
        raise MyopiaError(f"{run_dir}/{CONFIG} has no model config (run.model)")
    return GPT(GPTConfig.from_dict(run["model"]))


def load_run(run_dir: str | Path, weights: str | Path | None = None, *, device="cpu", corpus=None,
             finished: bool = False) -> Run:
    """The run in ``run_dir`` with its trained weights, in eval mode on ``device``.

    ``weights`` picks another weights file of the run (a snapshot, a ``checkpoints/step_*`` folder); default: the final
    ``model.safetensors`` (or, unless ``finished``, the latest checkpoint of an unfinished run). With ``corpus``,
    data tokenized differently from the run's training data is refused. The gradient setting is the run's own
    (it only affects training).
    """
    run_dir = Path(run_dir)
    config = read_config(run_dir)
    run = config.get("run", {})
    path = weights_file(run_dir, weights, finished=finished)
    model = _build_model(run_dir, run)
    if corpus is not None:
        check_tokenizer(config, int(model.cfg.vocab_size), corpus, run_dir)
    from .checkpoint import load_weights

    tensors, meta = load_weights(path)  # a weights file, a single-file checkpoint or a checkpoint folder
    try:
        model.load_state_dict(tensors, strict=True)
    except RuntimeError as exc:
        raise MyopiaError(f"weights in {run_dir} do not match its model ({first_line(exc)})") from None
    return Run(path=run_dir, config=config, model=model.to(device).eval(), meta=meta)


def load_run_model(run_dir: str | Path, weights: str | Path | None = None, device="cpu", *, corpus=None,
                   finished: bool = False) -> nn.Module:
    """The model of a run directory of either kind, in eval mode, with its trained weights (see :func:`load_run`).

    Our runs (``myopia train`` / pair runs) give a :class:`myopia.model.GPT`; ``myopia finetune`` runs give a
    :class:`myopia.hf.model.HFCausalLM`. Both map ``model(idx)`` to logits ``(B, T, vocab)``.
    """
    return load_run(run_dir, weights, device=device, corpus=corpus, finished=finished).model


def run_tokenizer(run_dir: str | Path):
    """The tokenizer a run was trained with: bytes for our runs, the saved HF tokenizer for finetune runs."""
    run_dir = Path(run_dir)
    cfg = read_config(run_dir)
    if cfg.get("run", {}).get("model_kind") == "hf":
        from .hf.tokenizer import load_hf_tokenizer

        return load_hf_tokenizer(run_dir / TOKENIZER)
    kind = cfg.get("task", {}).get("corpus", {}).get("tokenizer", {}).get("kind")
    if kind in (None, "bytes"):
        from .data import ByteTokenizer

        return ByteTokenizer()
    raise MyopiaError(f"{run_dir} was trained with a {kind!r} tokenizer, which this command cannot rebuild")


def load_model(spec: str | Path, device="cpu"):
    """``(model, tokenizer, info)`` for a run directory, a weights file inside one, or a Hugging Face model.

    A Hugging Face directory or hub name is wrapped in :class:`myopia.hf.model.HFCausalLM` with its own
    tokenizer. ``info`` records what was loaded (kind, path, training step when known).
    """
    path = Path(spec)
    if (path.is_file() and path.suffix == ".safetensors") or (path.is_dir() and path.parent.name == CHECKPOINTS):
        run = load_run(run_dir_of(path), path, device=device)
        return run.model, run_tokenizer(run.path), {"kind": run.kind, "path": str(path), "step": run.step}
    if path.is_dir() and is_run(path):
        run = load_run(path, None, device=device)
        return run.model, run_tokenizer(path), {"kind": run.kind, "path": str(path), "step": run.step}
    from .hf.model import HFCausalLM, load_hf_model
    from .hf.tokenizer import load_hf_tokenizer

    model = HFCausalLM(load_hf_model(spec)).to(device).eval()
    return model, load_hf_tokenizer(spec), {"kind": "hf-pretrained", "path": str(spec), "step": _step_from_name(spec)}


def _step_from_name(spec) -> int | None:
    m = re.search(r"step[-_]?(\d+)", str(spec))
    return int(m.group(1)) if m else None



def parse_runs(specs: list[str]) -> dict[str, list[Path]]:
    """Arms of ``--runs``: ``[NAME=]PATH[,PATH...]`` per arm (several paths: seeds of one arm; a run folder or a
    Hugging Face model directory each); NAME defaults to the folder name. Every path must exist."""
    out: dict[str, list[Path]] = {}
    for spec in specs:
        name, _, rest = spec.partition("=") if "=" in spec else ("", "", spec)
        paths = [Path(p) for p in rest.split(",") if p]
        if not paths:
            raise MyopiaError(f"--runs {spec!r}: no path")
        name = name or paths[0].name
        if name in out:
            raise MyopiaError(f"--runs: arm {name!r} given twice (name them NAME=PATH)")
        for p in paths:
            if not p.exists():
                raise MyopiaError(f"--runs: {p} does not exist")
        out[name] = paths
    return out


def data_identity(config: dict) -> dict:
    """What identifies the data a run trained on, from its config.json: ``{"data_fingerprint": ...}`` (the
    training split's content hash) when recorded, else (runs of earlier versions) the corpus's per-split
    document and token counts, vocabulary, tokenizer fingerprint and source fingerprint."""
    task = config.get("task", {})
    if task.get("data_fingerprint"):
        return {"data_fingerprint": task["data_fingerprint"]}
    corpus = task.get("corpus", {})
    return {"documents": corpus.get("documents"), "tokens": corpus.get("tokens"),
            "vocab_size": corpus.get("vocab_size"), "tokenizer": (corpus.get("tokenizer") or {}).get("fingerprint"),
            "source_fingerprint": corpus.get("source_fingerprint")}


def check_same_data(runs) -> str | None:
    """Refuse runs trained on different data: ``runs`` are run folders (or ``{name: folder}``); returns their
    common training-split fingerprint (None for runs of earlier versions, compared by counts instead).
    One MyopiaError line naming the first two runs that differ and what each recorded."""
    items = list(runs.items()) if isinstance(runs, dict) else [(str(r), r) for r in runs]
    configs = [(name, read_config(folder)) for name, folder in items]
    if not configs:
        return None
    name0, cfg0 = configs[0]
    for name, cfg in configs[1:]:
        a, b = data_identity(cfg0), data_identity(cfg)
        if ("data_fingerprint" in a) != ("data_fingerprint" in b):  # one run predates fingerprints
            a, b = _identity_without_fingerprint(cfg0), _identity_without_fingerprint(cfg)
        if a != b:
            raise MyopiaError(f"runs {name0} and {name} were trained on different data (training split "
                              f"{_describe_identity(a)} vs {_describe_identity(b)}); compare runs trained on "
                              "the same corpus and split")
    return data_identity(cfg0).get("data_fingerprint")


def _identity_without_fingerprint(config: dict) -> dict:
    """:func:`data_identity` without the fingerprint (to compare with a run that lacks one)."""
    return data_identity({"task": {k: v for k, v in config.get("task", {}).items() if k != "data_fingerprint"}})


def _describe_identity(ident: dict) -> str:
    if "data_fingerprint" in ident:
        return ident["data_fingerprint"]
    return f"{ident.get('tokens')} tokens, source {ident.get('source_fingerprint')}"


def training_corpus(run_dir: str | Path):
    """The token cache a run of ours was trained on, when its config names one that still exists; else None."""
    cfg_path = Path(run_dir) / CONFIG
    if not cfg_path.is_file():
        return None
    from .data.cache import is_cache, open_cache

    cfg = read_json(cfg_path)
    for cand in (cfg.get("task", {}).get("corpus", {}).get("cache"), cfg.get("run", {}).get("data")):
        if cand and not str(cand).startswith("hf:") and is_cache(cand):
            return open_cache(cand)
    return None
