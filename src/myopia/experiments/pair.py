"""``myopia pair``: vanilla and myopic arms trained with identical initialisation, data order and budget.

The pair directory (``pair.json``, ``corpus/``, ``runs/<arm>/seed<s>/``) is described and read by
:class:`myopia.pairdir.PairDir`; this module trains into it.

Arms are ``vanilla``, ``myopic``, ``myopic-hidden``, ``bigram`` and β/horizon variants written
``myopic-beta0.5``, ``myopic-horizon8``, ``myopic-hidden-horizon8``. Within a seed every arm starts from the
same initial weights (:func:`myopia.lm.build_model` does not depend on the gradient setting) and reads the same
examples in the same order (:class:`~myopia.data.LMTask` order depends only on the data seed). Rerunning the
command skips finished runs and resumes interrupted ones, so arms and seeds can be added later.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, replace
from pathlib import Path

from ..arms import PAIR_ARMS, GradientSetting
from ..checkpoint import has_checkpoint, old_version_error
from ..data import load_corpus
from ..data.cache import is_cache, open_cache
from ..data.overlap import require_clean_split
from ..errors import MyopiaError
from ..io import provenance, read_json
from ..lm import train_lm
from ..model import GPTConfig
from ..pairdir import MANIFEST, PairDir
from ..rundir import CONFIG, RESULT
from ..train import TrainConfig

DEFAULT_ARMS = PAIR_ARMS


@dataclass(frozen=True)
class Arm:
    """One arm of a pair: its name (e.g. myopic-horizon8) and the gradient setting it trains with."""

    name: str
    gradient: str
    beta: float = 0.0
    horizon: int = 0

    @property
    def setting(self) -> GradientSetting:
        """This arm's :class:`GradientSetting`."""
        return GradientSetting(self.gradient, self.beta, self.horizon)

    def model_config(self, base: GPTConfig) -> GPTConfig:
        """``base`` with this arm's gradient, beta and horizon."""
        return base.with_setting(self.setting)


def parse_arm(name: str) -> Arm:
    """The arm an arm name stands for (:meth:`GradientSetting.parse`: vanilla, bigram, myopic[-hidden] with an
    optional -horizonN and/or -betaX)."""
    setting = GradientSetting.parse(name)
    return Arm(name.strip(), setting.kind, setting.beta, setting.horizon)


def parse_arms(spec: str | list[str] | None) -> list[Arm]:
    """Vanilla first, then the requested arms in order (duplicates dropped)."""
    names = list(DEFAULT_ARMS[1:]) if spec is None else (spec.split(",") if isinstance(spec, str) else list(spec))
    names = ["vanilla"] + [n.strip() for n in names if n.strip() and n.strip() != "vanilla"]
    return [parse_arm(n) for n in dict.fromkeys(names)]


def parse_seeds(spec: str | list[int] | None, default: int = 0) -> list[int]:
    """Seeds from a comma-separated string or a list (duplicates dropped, order kept); ``default`` when none."""
    if spec is None or spec == "":
        return [default]
    if isinstance(spec, str):
        try:
            seeds = [int(s) for s in spec.split(",") if s.strip()]
        except ValueError:
            raise MyopiaError(f"--seeds must be comma-separated integers, got {spec!r}") from None
    else:
        seeds = [int(s) for s in spec]
    if not seeds or any(s < 0 for s in seeds):
        raise MyopiaError(f"--seeds must be non-negative integers, got {spec!r}")
    return list(dict.fromkeys(seeds))


def check_seq_len(corpus, seq_len: int) -> None:
    """A context longer than every document would only ever be filled by unrelated neighbouring documents."""
    longest = int(corpus.doc_lengths.max())
    if seq_len + 1 > longest:
        raise MyopiaError(f"seq-len {seq_len} is longer than every document (the longest has {longest} tokens); "
                          f"use --seq-len {max(1, longest - 1)} or less")


def prepare_corpus(data, out: Path, *, tokenizer=None, cache=None, progress=True, **data_opts):
    """The pair's corpus: ``data`` itself when it is a token cache, else a cache built in ``cache``/``out/corpus``.

    ``tokenizer`` None means bytes for raw data and "whatever the cache was built with" for a cache.
    """
    if not str(data).startswith("hf:") and is_cache(data):
        return open_cache(data, expect_tokenizer=tokenizer), Path(data)
    cache = Path(cache) if cache is not None else Path(out) / "corpus"
    corpus = load_corpus(data, tokenizer or "bytes", cache=cache, progress=progress, **data_opts)
    return corpus, cache


def _relative(path: Path, root: Path) -> str:
    try:
        return str(Path(path).resolve().relative_to(Path(root).resolve()))
    except ValueError:
        return str(Path(path).resolve())


def _train_record(cfg: TrainConfig) -> dict:
    """What a pair's manifest records of its training config (the per-run keys left out)."""
    return {k: v for k, v in cfg.to_dict().items() if k not in ("seed", "progress", "device")}


def _as_current(model: dict, train: dict) -> tuple[dict, dict]:
    """A stored pair's model and training configs as today's code writes them (model fields added since take
    GPTConfig's defaults; a training config from before 0.2.0 is refused by TrainConfig.from_dict)."""
    return GPTConfig.from_dict(model).to_dict(), _train_record(TrainConfig.from_dict({**train, "seed": 0}))


def run_pair(
    data,
    out: str | Path,
    model_cfg: GPTConfig,
    train_cfg: TrainConfig,
    *,
    arms=None,
    seeds=None,
    tokenizer=None,
    cache=None,
    eval_tokens: int = 65536,
    data_opts: dict | None = None,
    progress: bool = True,
) -> dict:
    """Train every arm for every seed into ``out``; returns the manifest (also written to out/pair.json)."""
    pair = PairDir(out)
    arm_list = parse_arms(arms)
    seed_list = parse_seeds(seeds, train_cfg.seed)
    corpus, cache_dir = prepare_corpus(data, pair.path, tokenizer=tokenizer, cache=cache, progress=progress,
                                       **(data_opts or {}))
    check_seq_len(corpus, model_cfg.seq_len)
    require_clean_split(corpus)
    base = replace(model_cfg, vocab_size=corpus.vocab_size).with_setting(GradientSetting())
    manifest = {
        "kind": "myopia-pair",
        "data": {"spec": str(data), "cache": _relative(cache_dir, pair.path), "corpus": corpus.describe()},
        "model": base.to_dict(),
        "train": _train_record(replace(train_cfg, seed=0)),
        "eval_tokens": eval_tokens,
        "arms": [],
        "seeds": [],
        "runs": {},
    }
    _continue_manifest(pair, manifest)
    for arm in arm_list:
        if arm.name not in [a["name"] for a in manifest["arms"]]:
            manifest["arms"].append({"name": arm.name, "gradient": arm.gradient, "beta": arm.beta,
                                     "horizon": arm.horizon})
    manifest["seeds"] = sorted(set(manifest["seeds"]) | set(seed_list))
    manifest.update(provenance())
    pair.write_manifest(manifest)

    for seed in seed_list:
        for arm in arm_list:
            rd = pair.run(arm.name, seed)
            result = _train_run(arm, seed, rd, cache_dir, corpus, arm.model_config(base),
                                replace(train_cfg, seed=seed), eval_tokens, progress)
            manifest["runs"].setdefault(arm.name, {})[str(seed)] = {
                "dir": _relative(rd, pair.path), "eval_loss": result["eval_loss"],
                "train_time_s": result.get("train_time_s"), "tokens_seen": result.get("tokens_seen"),
            }
            pair.write_manifest(manifest)
    return manifest


def _continue_manifest(pair: PairDir, manifest: dict) -> None:
    """Take over the arms, seeds and runs of the pair already in the folder (if any), refusing one trained with
    another model, training, evaluation or tokenizer configuration (naming the fields that differ)."""
    if not pair.exists():
        return
    out = pair.path
    old = read_json(out / MANIFEST)
    if "document_mask" not in old.get("train", {}):
        raise old_version_error(out, f"its {MANIFEST} has no document_mask")
    old["model"], old["train"] = _as_current(old.get("model", {}), old.get("train", {}))
    for key in ("model", "train", "eval_tokens"):
        if old.get(key) != manifest[key]:
            raise MyopiaError(f"{out} holds a pair with a different {key} configuration "
                              f"({_differences(old.get(key), manifest[key])}); use another --out")
    if old["data"]["corpus"].get("tokenizer") != manifest["data"]["corpus"].get("tokenizer"):
        raise MyopiaError(f"{out} holds a pair trained with a different tokenizer; use another --out")
    manifest["arms"], manifest["seeds"], manifest["runs"] = old["arms"], old["seeds"], old["runs"]


def _differences(saved, given) -> str:
    """``field: saved there, given here`` for each field that differs (a whole value when not a dict)."""
    if not isinstance(saved, dict) or not isinstance(given, dict):
        return f"{saved!r} there, {given!r} here"
    keys = sorted(k for k in set(saved) | set(given) if saved.get(k) != given.get(k))
    return "; ".join(f"{k}: {saved.get(k)!r} there, {given.get(k)!r} here" for k in keys)


def _train_run(arm: Arm, seed: int, rd: Path, cache_dir: Path, corpus, cfg: GPTConfig, tcfg: TrainConfig,
               eval_tokens: int, progress: bool) -> dict:
    """The result of one arm and seed: read when finished (refusing another model config), else trained or
    resumed."""
    if (rd / RESULT).is_file():
        saved = read_json(rd / CONFIG)["run"]["model"]
        if saved != cfg.to_dict():
            raise MyopiaError(f"{rd} holds a run with a different model config; use another --out")
        result = read_json(rd / RESULT)
        if progress:
            print(f"[pair] {arm.name} seed {seed}: already trained (eval loss {result['eval_loss']:.4f})",
                  file=sys.stderr)
        return result
    # a run stopped before its first checkpoint leaves config/metrics only: resume=True restarts it at step 0
    resume = has_checkpoint(rd) or (rd.is_dir() and any(rd.iterdir()))
    if progress:
        print(f"[pair] {'resuming' if resume else 'training'} {arm.name} seed {seed} -> {rd}",
              file=sys.stderr, flush=True)
    return train_lm(cache_dir, rd, cfg, tcfg, resume=resume, eval_tokens=eval_tokens, corpus=corpus)
