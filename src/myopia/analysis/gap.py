"""Where the myopia gap lives: aggregate per-token losses of paired models into gaps with confidence intervals.

Inputs are per-token losses (nats) of each arm on the same held-out tokens, one row per seed, and the token
metadata of :class:`~myopia.analysis.heldout.HeldOut`. The gap of an arm is its loss minus the vanilla loss of
the same seed, averaged over tokens (token-weighted) and seeds; intervals come from
:class:`~myopia.analysis.bootstrap.DocBootstrap` (documents, and seeds when there are several).
"""

from __future__ import annotations

import numpy as np

from ..arms import MYOPIC_ARMS as REQUIRED  # always reported side by side, even when not trained
from ..arms import REFERENCE
from .bootstrap import DocBootstrap, interval, summary
from .heldout import HeldOut
from .token_classes import CLASSES

POSITION_BUCKETS = (0, 8, 32, 64)


def _f(x) -> float | None:
    x = float(x)
    return x if np.isfinite(x) else None


class _Stats:
    """Shared bootstrap over the held-out documents for all groupings."""

    def __init__(self, held: HeldOut, n_seeds: int, n_boot: int, seed: int):
        self.docs, self.doc_index = np.unique(held.doc, return_inverse=True)
        self.boot = DocBootstrap(len(self.docs), n_seeds, n_boot, seed)
        self.n_seeds = n_seeds

    def means(self, values, group=None, n_groups=1):
        values = np.atleast_2d(values)
        if values.shape[0] == 1 and self.n_seeds > 1:  # seedless quantity (e.g. a count model)
            values = np.repeat(values, self.n_seeds, axis=0)
        return self.boot.group_means(values, self.doc_index, group, n_groups)


def _ratio(num_point, num_reps, den_point, den_reps) -> dict:
    with np.errstate(invalid="ignore", divide="ignore"):
        return summary(num_point / den_point, num_reps / den_reps)


def _grouped(stats: _Stats, losses: dict, contrasts: list[str], group, labels: list[str]) -> dict:
    """Per group: tokens, vanilla loss, each arm's loss and gap with CI and relative gap."""
    G = len(labels)
    ref_point, ref_reps, counts = stats.means(losses[REFERENCE], group, G)
    ref_lo, ref_hi = interval(ref_reps)
    out = {}
    arm_stats = {}
    for arm in contrasts:
        arm_stats[arm] = stats.means(losses[arm] - losses[REFERENCE], group, G)
    docs_per_group = _docs_per_group(stats, group, G)
    for g, label in enumerate(labels):
        if counts[g] == 0:
            continue
        row = {"tokens": int(counts[g]), "docs": int(docs_per_group[g]),
               "vanilla": {"mean": _f(ref_point[g]), "ci95": [_f(ref_lo[g]), _f(ref_hi[g])]}}
        for arm, (gp, greps, _) in arm_stats.items():
            row[arm] = {**_clean(summary(gp[g], greps[:, g])),
                        "relative": _clean(_ratio(gp[g], greps[:, g], ref_point[g], ref_reps[:, g]))["mean"]}
        out[label] = row
    return out


def _docs_per_group(stats: _Stats, group, G) -> np.ndarray:
    """How many documents contribute tokens to each group, (G,)."""
    group = np.zeros(len(stats.doc_index), dtype=np.int64) if group is None else np.asarray(group)
    pairs = np.unique(stats.doc_index * G + group)
    return np.bincount(pairs % G, minlength=G)


def _clean(d: dict) -> dict:
    return {k: (_f(v) if isinstance(v, float) else [_f(x) for x in v] if isinstance(v, list) else v)
            for k, v in d.items()}


def analyse_gap(
    losses: dict[str, np.ndarray],
    kls: dict[str, np.ndarray],
    held: HeldOut,
    *,
    doc_slices: list[str],
    token_class: np.ndarray,
    tokenizer=None,
    count_bigram: np.ndarray | None = None,
    n_boot: int = 2000,
    seed: int = 0,
    top_k: int = 20,
) -> dict:
    """The gap summary (JSON-able dict) from per-token losses {arm: (S, N)} and KLs {arm: (S, N)}."""
    losses = {k: np.atleast_2d(np.asarray(v, dtype=np.float64)) for k, v in losses.items()}
    S = losses[REFERENCE].shape[0]
    stats = _Stats(held, S, n_boot, seed)
    contrasts = [a for a in losses if a != REFERENCE]

    # overall
    ref_point, ref_reps, _ = stats.means(losses[REFERENCE])
    arms = {}
    for arm, v in losses.items():
        p, reps, _ = stats.means(v)
        arms[arm] = {**_clean(summary(p[0], reps[:, 0])),
                     "per_seed": [_f(x) for x in stats.boot.per_seed_means(v)[:, 0]]}
    bigram_point = bigram_reps = None
    if "bigram" in losses:
        bigram_point, bigram_reps, _ = stats.means(losses["bigram"] - losses[REFERENCE])
    gaps = {}
    for arm in contrasts:
        diff = losses[arm] - losses[REFERENCE]
        p, reps, _ = stats.means(diff)
        entry = {**_clean(summary(p[0], reps[:, 0])),
                 "relative": _clean(_ratio(p[0], reps[:, 0], ref_point[0], ref_reps[:, 0])),
                 "per_seed": [_f(x) for x in stats.boot.per_seed_means(diff)[:, 0]]}
        if S > 1:
            entry["seed_sd"] = _f(np.std(entry["per_seed"], ddof=1))
        if bigram_point is not None and arm != "bigram":
            entry["fraction_of_context_value"] = _clean(_ratio(p[0], reps[:, 0], bigram_point[0],
                                                               bigram_reps[:, 0]))
        if arm in kls:
            kp, kreps, _ = stats.means(kls[arm])
            entry["kl_from_vanilla"] = _clean(summary(kp[0], kreps[:, 0]))
        gaps[arm] = entry
    for arm in REQUIRED:
        arms.setdefault(arm, None)
        gaps.setdefault(arm, None)
    result = {
        "n_tokens": held.n_tokens,
        "n_docs": int(len(stats.docs)),
        "n_seeds": S,
        "seq_len": held.seq_len,
        "split": held.split,
        "bootstrap": {"replicates": n_boot, "seed": seed, "unit": "document" + (" and seed" if S > 1 else ""),
                      "level": 0.95},
        "loss": arms,
        "gap": gaps,
        "count_bigram": None,
    }
    if count_bigram is not None:
        p, reps, _ = stats.means(count_bigram[None, :])
        result["count_bigram"] = _clean(summary(p[0], reps[:, 0]))

    # by position (curve) and position buckets
    T = held.seq_len
    ref_p, ref_r, counts = stats.means(losses[REFERENCE], held.position, T)
    curve = {"position": list(range(T)), "tokens": counts.astype(int).tolist(),
             "vanilla": [_f(x) for x in ref_p]}
    for arm in contrasts:
        ap, _, _ = stats.means(losses[arm], held.position, T)
        gp, greps, _ = stats.means(losses[arm] - losses[REFERENCE], held.position, T)
        lo, hi = interval(greps)
        curve[arm] = {"loss": [_f(x) for x in ap], "gap": [_f(x) for x in gp], "lo": [_f(x) for x in lo],
                      "hi": [_f(x) for x in hi]}
    result["by_position"] = curve
    edges = [e for e in POSITION_BUCKETS if e < T] + [T]
    bucket_labels = [f"{a}-{b - 1}" for a, b in zip(edges[:-1], edges[1:])]
    bucket = np.searchsorted(np.asarray(edges[1:]), held.position, side="right")
    result["by_position_bucket"] = _grouped(stats, losses, contrasts, bucket, bucket_labels)

    # by slice
    slice_names = list(dict.fromkeys(doc_slices[d] for d in stats.docs))
    index = {s: i for i, s in enumerate(slice_names)}
    token_slice = np.array([index[doc_slices[d]] for d in stats.docs])[stats.doc_index]
    result["by_slice"] = _grouped(stats, losses, contrasts, token_slice, slice_names)

    # by token class, with each class's share of the tokens and of the total gap
    token_class = np.asarray(token_class, dtype=np.int64)
    by_class = _grouped(stats, losses, contrasts, token_class, list(CLASSES))
    class_sums = {arm: np.bincount(token_class, weights=(losses[arm] - losses[REFERENCE]).mean(0),
                                   minlength=len(CLASSES)) for arm in contrasts}
    for c, row in by_class.items():
        row["token_share"] = row["tokens"] / held.n_tokens
        for arm in contrasts:
            total = class_sums[arm].sum()
            row[arm]["gap_share"] = _f(class_sums[arm][CLASSES.index(c)] / total) if total != 0 else None
    result["by_class"] = by_class

    # top contexts
    if tokenizer is not None and top_k > 0:
        result["top_contexts"] = {
            arm: {"by_loss_diff": top_contexts((losses[arm] - losses[REFERENCE]).mean(0), losses, kls.get(arm),
                                               held, doc_slices, tokenizer, arm, top_k),
                  "by_kl": top_contexts(np.atleast_2d(kls[arm]).mean(0), losses, kls.get(arm), held, doc_slices,
                                        tokenizer, arm, top_k) if arm in kls else []}
            for arm in contrasts if arm != "bigram"
        }
    return result


def top_contexts(score: np.ndarray, losses: dict, kl, held: HeldOut, doc_slices, tokenizer, arm: str, k: int, *,
                 context_tokens: int = 48, after_tokens: int = 12, min_separation: int = 16) -> list[dict]:
    """The ``k`` highest-``score`` tokens (at least ``min_separation`` apart within a window), decoded."""
    order = np.argsort(-score, kind="stable")
    chosen: list[int] = []
    taken: dict[int, list[int]] = {}
    for i in order:
        if len(chosen) == k or not np.isfinite(score[i]):
            break
        w, p = int(held.window[i]), int(held.position[i])
        if any(abs(p - q) < min_separation for q in taken.get(w, [])):
            continue
        taken.setdefault(w, []).append(p)
        chosen.append(int(i))
    rows = []
    for i in chosen:
        w, p = int(held.window[i]), int(held.position[i])
        ctx = held.inputs[w, max(0, p - context_tokens + 1) : p + 1]
        after = held.targets[w, p + 1 : p + 1 + after_tokens]
        rows.append({
            "doc": int(held.doc[i]),
            "slice": doc_slices[int(held.doc[i])],
            "position": p,
            "context": tokenizer.decode(ctx),
            "target": tokenizer.token_text(int(held.target[i])),
            "after": tokenizer.decode(after[after >= 0]),
            "vanilla_loss": _f(losses[REFERENCE][:, i].mean()),
            f"{arm}_loss": _f(losses[arm][:, i].mean()),
            "loss_diff": _f((losses[arm][:, i] - losses[REFERENCE][:, i]).mean()),
            "kl": None if kl is None else _f(np.atleast_2d(kl)[:, i].mean()),
        })
    return rows
