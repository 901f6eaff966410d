"""Where the myopia gap lives: aggregate per-token losses of paired models into gaps with honest intervals.

Inputs are per-token losses (nats) of each arm on the same held-out tokens, one row per seed, and the token
metadata of :class:`~myopia.analysis.heldout.HeldOut`. The gap of an arm is its loss minus the vanilla loss of
the same seed, token-weighted within a seed and averaged over seeds. Every interval comes from
:class:`~myopia.analysis.stats.HierarchicalBootstrap` with the *document* as the evaluation unit: ``ci95`` is
seed-inclusive (seeds and documents resampled, and with >= 3 seeds also a t-interval over the per-seed gaps;
the wider), ``ci95_eval`` resamples documents only. With one seed every entry says
``"training_noise": "not measured (1 seed)"``.

Each gap is given in three units: nats/token (``mean``), bits per byte (``bits_per_byte``: total nats over the
scored text's UTF-8 bytes / ln 2) and as a fraction of the value of context (``fraction_of_context_value``:
gap / (count-bigram loss - vanilla loss) on the same tokens). With >= 2 seeds the null (vanilla against vanilla
of another seed, same tokens) stands beside it (``null_gap``; ``against_null`` = gap / null sd).

The analysis is split along its sections: :func:`overall`, :func:`by_position`, :func:`by_slice`,
:func:`by_class` and :func:`top_contexts_section`; :func:`analyse_gap` runs them all.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..arms import MYOPIC_ARMS as REQUIRED  # always reported side by side, even when not trained
from ..arms import REFERENCE
from .heldout import HeldOut
from .stats import (TRAINING_NOISE_ONE_SEED, Estimate, HierarchicalBootstrap, Resampled, against_null, null_gap,
                    seed_pairs, training_noise_note)
from .token_classes import CLASSES
from .units import LN2

POSITION_BUCKETS = (0, 8, 32, 64)


def _f(x) -> float | None:
    if x is None:
        return None
    x = float(x)
    return x if np.isfinite(x) else None


def _mean_ci(s: dict) -> dict:
    """The short form {mean, ci95} of a summary (for ratios quoted beside the main number)."""
    return Estimate(s["mean"], s["ci95"]).to_dict()


@dataclass
class GapData:
    """Everything the sections share: losses/KLs {arm: (S, N)}, the held-out tokens, one bootstrap over documents,
    per-token bytes (N,) and the count-bigram losses (N,) (either may be None)."""

    losses: dict
    kls: dict
    held: HeldOut
    docs: np.ndarray  # (D,) corpus ids of the evaluated documents
    doc_index: np.ndarray  # (N,) index into docs
    boot: HierarchicalBootstrap
    token_bytes: np.ndarray | None
    count_bigram: np.ndarray | None
    doc_slices: list

    @property
    def n_seeds(self) -> int:
        return self.losses[REFERENCE].shape[0]

    @property
    def contrasts(self) -> list[str]:
        return [a for a in self.losses if a != REFERENCE]

    def means(self, values, group=None, n_groups: int = 1) -> Resampled:
        return self.boot.means(values, self.doc_index, group, n_groups)

    def gap(self, arm: str, group=None, n_groups: int = 1) -> Resampled:
        return self.means(self.losses[arm] - self.losses[REFERENCE], group, n_groups)

    def context_value(self, group=None, n_groups: int = 1) -> Resampled | None:
        """count-bigram loss - vanilla loss: what the context is worth to vanilla, same tokens."""
        if self.count_bigram is None:
            return None
        return self.means(self.count_bigram[None, :] - self.losses[REFERENCE], group, n_groups)

    def docs_per_group(self, group, G: int) -> np.ndarray:
        """How many documents contribute tokens to each group, (G,)."""
        group = np.zeros(len(self.doc_index), dtype=np.int64) if group is None else np.asarray(group)
        pairs = np.unique(self.doc_index * G + group)
        return np.bincount(pairs % G, minlength=G)


def prepare(losses, kls, held: HeldOut, *, doc_slices, token_bytes=None, count_bigram=None, n_boot: int = 2000,
            seed: int = 0) -> GapData:
    losses = {k: np.atleast_2d(np.asarray(v, dtype=np.float64)) for k, v in losses.items()}
    kls = {k: np.atleast_2d(np.asarray(v, dtype=np.float64)) for k, v in kls.items()}
    docs, doc_index = np.unique(held.doc, return_inverse=True)
    S = losses[REFERENCE].shape[0]
    return GapData(losses, kls, held, docs, doc_index, HierarchicalBootstrap(len(docs), S, n_boot, seed),
                   None if token_bytes is None else np.asarray(token_bytes, dtype=np.float64),
                   None if count_bigram is None else np.asarray(count_bigram, dtype=np.float64), doc_slices)


# --- overall ------------------------------------------------------------------------------------------------------

def overall(data: GapData) -> dict:
    """Loss of every arm, gap of every contrast (three units, KL, against the null), the count bigram, the null."""
    S = data.n_seeds
    ref = data.means(data.losses[REFERENCE])
    per_byte = None
    if data.token_bytes is not None and data.token_bytes.sum() > 0:
        per_byte = data.means(data.token_bytes[None, :])  # bytes per token, replicate by replicate

    def in_bits_per_byte(r: Resampled) -> dict | None:
        return None if per_byte is None else _mean_ci((r / per_byte / LN2).summary())

    arms = {}
    for arm, v in data.losses.items():
        r = data.means(v)
        arms[arm] = {**r.summary(), "bits_per_byte": in_bits_per_byte(r)}
    null = null_gap(data.losses[REFERENCE], data.doc_index, n_boot=data.boot.n_boot)
    if null is not None and per_byte is not None:
        scale = float(per_byte.point[0]) * LN2
        null["bits_per_byte"] = {"mean": _f(null["mean"] / scale), "sd": _f(null["sd"] / scale),
                                 "ci95": [_f(x / scale) if x is not None else None for x in null["ci95"]]}
    context = data.context_value()
    gaps = {}
    for arm in data.contrasts:
        g = data.gap(arm)
        entry = g.summary()
        entry["relative"] = _mean_ci((g / ref).summary())
        if S > 1:
            entry["seed_sd"] = _f(np.std(entry["per_seed"], ddof=1))
        entry["bits_per_byte"] = in_bits_per_byte(g)
        entry["fraction_of_context_value"] = None if context is None else _mean_ci((g / context).summary())
        entry["against_null"] = against_null(entry["mean"], null)
        if arm in data.kls:
            entry["kl_from_vanilla"] = data.means(data.kls[arm]).summary()
        gaps[arm] = entry
    for arm in REQUIRED:
        arms.setdefault(arm, None)
        gaps.setdefault(arm, None)
    out = {"loss": arms, "gap": gaps, "count_bigram": None, "null_gap": null,
           "context_value": None if context is None else {**_mean_ci(context.summary()),
                                                          "bits_per_byte": in_bits_per_byte(context)}}
    if data.count_bigram is not None:
        cb = data.means(data.count_bigram[None, :])
        out["count_bigram"] = {**cb.summary(), "bits_per_byte": in_bits_per_byte(cb)}
    if per_byte is not None:
        out["bytes"] = {"scored": int(data.token_bytes.sum()), "per_token": _f(per_byte.point[0])}
    return out


# --- groups (positions, slices, classes) --------------------------------------------------------------------------

def _grouped(data: GapData, group, labels: list[str]) -> dict:
    """Per group: documents, tokens and token share, vanilla loss, each arm's gap (seed-inclusive summary), its
    relative gap and the gap as a fraction of that group's value of context."""
    G = len(labels)
    ref = data.means(data.losses[REFERENCE], group, G)
    ref_s = ref.summaries()
    context = data.context_value(group, G)
    per_arm = {}
    for arm in data.contrasts:
        g = data.gap(arm, group, G)
        per_arm[arm] = (g.summaries(), (g / ref).point,
                        None if context is None else (g / context).summaries())
    docs = data.docs_per_group(group, G)
    n = data.held.n_tokens
    out = {}
    for i, label in enumerate(labels):
        if ref.counts[i] == 0:
            continue
        row = {"tokens": int(ref.counts[i]), "docs": int(docs[i]), "token_share": float(ref.counts[i] / n),
               "vanilla": _mean_ci(ref_s[i])}
        if context is not None:
            row["context_value"] = _f(context.point[i])
        for arm, (gs, rel, frac) in per_arm.items():
            row[arm] = {**gs[i], "relative": _f(rel[i]),
                        "fraction_of_context_value": None if frac is None else _mean_ci(frac[i])}
        out[label] = row
    return out


def by_position(data: GapData) -> tuple[dict, dict]:
    """(the gap curve over context positions with seed-inclusive bands, the gap in position buckets)."""
    held = data.held
    T = held.seq_len
    ref = data.means(data.losses[REFERENCE], held.position, T)
    curve = {"position": list(range(T)), "tokens": ref.counts.astype(int).tolist(),
             "vanilla": [_f(x) for x in ref.point]}
    for arm in data.contrasts:
        loss = data.means(data.losses[arm], held.position, T)
        summaries = data.gap(arm, held.position, T).summaries()
        curve[arm] = {"loss": [_f(x) for x in loss.point], "gap": [s["mean"] for s in summaries],
                      "lo": [s["ci95"][0] for s in summaries], "hi": [s["ci95"][1] for s in summaries]}
    curve["training_noise"] = training_noise_note(data.n_seeds)
    edges = [e for e in POSITION_BUCKETS if e < T] + [T]
    labels = [f"{a}-{b - 1}" for a, b in zip(edges[:-1], edges[1:])]
    bucket = np.searchsorted(np.asarray(edges[1:]), held.position, side="right")
    return curve, _grouped(data, bucket, labels)


def by_slice(data: GapData) -> dict:
    names = list(dict.fromkeys(data.doc_slices[d] for d in data.docs))
    index = {s: i for i, s in enumerate(names)}
    token_slice = np.array([index[data.doc_slices[d]] for d in data.docs])[data.doc_index]
    return _grouped(data, token_slice, names)


def by_class(data: GapData, token_class) -> dict:
    """By token class, with each class's share of the tokens and of the total gap."""
    token_class = np.asarray(token_class, dtype=np.int64)
    rows = _grouped(data, token_class, list(CLASSES))
    sums = {arm: np.bincount(token_class, weights=(data.losses[arm] - data.losses[REFERENCE]).mean(0),
                             minlength=len(CLASSES)) for arm in data.contrasts}
    for c, row in rows.items():
        for arm in data.contrasts:
            total = sums[arm].sum()
            row[arm]["gap_share"] = _f(sums[arm][CLASSES.index(c)] / total) if total != 0 else None
    return rows


# --- top contexts -------------------------------------------------------------------------------------------------

def top_contexts_section(data: GapData, tokenizer, k: int) -> tuple[dict, dict]:
    """(per arm: the k tokens where vanilla beats it most, by loss difference and by KL; the null: the same ranking
    applied to two vanilla seeds, so a reader sees how large top differences are by chance)."""
    losses, held = data.losses, data.held
    arms = {
        arm: {"by_loss_diff": top_contexts((losses[arm] - losses[REFERENCE]).mean(0), losses, data.kls.get(arm),
                                           held, data.doc_slices, tokenizer, arm, k),
              "by_kl": top_contexts(data.kls[arm].mean(0), losses, data.kls.get(arm), held, data.doc_slices,
                                    tokenizer, arm, k) if arm in data.kls else []}
        for arm in data.contrasts if arm != "bigram"
    }
    if data.n_seeds < 2:
        return arms, {"training_noise": TRAINING_NOISE_ONE_SEED, "by_loss_diff": [],
                      "note": "needs two vanilla seeds"}
    ref = losses[REFERENCE]
    name = "vanilla (other seed)"
    rows = []
    for i, j in seed_pairs(data.n_seeds):  # every pair, both directions: the same ranking a contrast gets
        for a, b in ((i, j), (j, i)):
            pair = {REFERENCE: ref[[a]], name: ref[[b]]}
            for r in top_contexts(ref[b] - ref[a], pair, None, held, data.doc_slices, tokenizer, name, k):
                rows.append({**r, "seeds": [a, b]})
    rows.sort(key=lambda r: -(r["loss_diff"] or 0))
    null = {"by_loss_diff": _separated(rows, k), "pairs": "every ordered pair of vanilla seeds",
            "definition": "loss(vanilla seed b) - loss(vanilla seed a), the same ranking as a contrast's"}
    # like for like: the mean of the top-k loss differences of single runs, for each (arm seed s - vanilla seed s)
    # and for each ordered pair of vanilla seeds (the lists above average an arm over seeds, which shrinks extremes)
    null["mean_top_loss_diff"] = _f(np.mean([_top_mean(ref[b] - ref[a], k) for i, j in seed_pairs(data.n_seeds)
                                             for a, b in ((i, j), (j, i))]))
    null["mean_top_loss_diff_by_arm"] = {
        arm: _f(np.mean([_top_mean(losses[arm][s] - ref[s], k) for s in range(data.n_seeds)])) for arm in arms}
    null["top_mean_of"] = "single runs: each seed's arm - vanilla, each ordered pair of vanilla seeds"
    return arms, null


def _top_mean(score: np.ndarray, k: int) -> float:
    """Mean of the k largest finite values of ``score``."""
    v = score[np.isfinite(score)]
    k = min(k, v.size)
    return float(np.partition(v, v.size - k)[-k:].mean()) if k else float("nan")


def _separated(rows: list[dict], k: int) -> list[dict]:
    """The first k rows that are not the same token of the same document twice."""
    seen, out = set(), []
    for r in rows:
        key = (r["doc"], r["position"], r["context"])
        if key in seen:
            continue
        seen.add(key)
        out.append(r)
        if len(out) == k:
            break
    return out


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


# --- everything ---------------------------------------------------------------------------------------------------

def analyse_gap(
    losses: dict[str, np.ndarray],
    kls: dict[str, np.ndarray],
    held: HeldOut,
    *,
    doc_slices: list[str],
    token_class: np.ndarray,
    tokenizer=None,
    count_bigram: np.ndarray | None = None,
    token_bytes: np.ndarray | None = None,
    n_boot: int = 2000,
    seed: int = 0,
    top_k: int = 20,
) -> dict:
    """The gap summary (JSON-able dict) from per-token losses {arm: (S, N)} and KLs {arm: (S, N)}.

    ``token_bytes`` (N,): UTF-8 bytes each scored token stands for (bits per byte); default from ``tokenizer``.
    """
    if token_bytes is None and tokenizer is not None:
        from .units import bytes_of_tokens

        token_bytes, _ = bytes_of_tokens(held.target, tokenizer)
    data = prepare(losses, kls, held, doc_slices=doc_slices, token_bytes=token_bytes, count_bigram=count_bigram,
                   n_boot=n_boot, seed=seed)
    S = data.n_seeds
    result = {
        "n_tokens": held.n_tokens,
        "n_docs": int(len(data.docs)),
        "n_seeds": S,
        "training_noise": training_noise_note(S),
        "seq_len": held.seq_len,
        "split": held.split,
        "bootstrap": {"replicates": n_boot, "seed": seed, "unit": "document" + (" and seed" if S > 1 else ""),
                      "level": 0.95, "design": "hierarchical: seeds, then documents (the same documents for "
                      "every seed); ci95 = the widest of the bootstrap, the t-interval over seeds (>= 3 seeds) "
                      "and the documents-only interval ci95_eval"},
        **overall(data),
    }
    result["by_position"], result["by_position_bucket"] = by_position(data)
    result["by_slice"] = by_slice(data)
    result["by_class"] = by_class(data, token_class)
    if tokenizer is not None and top_k > 0:
        result["top_contexts"], result["top_contexts_null"] = top_contexts_section(data, tokenizer, top_k)
    return result
