"""What document masking changes: compare two pairs that differ only in ``--document-mask``.

Reads ``gap/per_token.npz`` of both pair directories (written by ``myopia gap``: the same held-out tokens,
seeds and arms are required) and reports, with the seed-inclusive intervals of :mod:`myopia.analysis.stats`
(hierarchical bootstrap over seeds and held-out documents; t-interval over seeds with >= 3 seeds):

- each arm's loss, masked minus unmasked training;
- each pair's gap (arm - vanilla) and the change of the gap (masked gap - unmasked gap);
- the same split into two groups fixed before looking: the document start (positions 0-15 of each document's
  first window, where a model trained across boundaries has seen foreign context) and everything else;
- the vanilla-vs-vanilla null across seeds of each pair, for scale.

    python scripts/document_mask_effect.py MASKED_PAIR UNMASKED_PAIR [--json OUT.json]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from myopia.analysis.stats import HierarchicalBootstrap, format_interval, null_gap
from myopia.experiments.gap import ARRAYS, load_arrays
from myopia.io import provenance, read_json

START = 16  # positions of a document's first window counted as "document start" (fixed in advance)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("masked")
    p.add_argument("unmasked")
    p.add_argument("--bootstrap", type=int, default=2000)
    p.add_argument("--json", default=None)
    a = p.parse_args()
    M, U = load_arrays(Path(a.masked) / ARRAYS), load_arrays(Path(a.unmasked) / ARRAYS)
    for key in ("target", "doc", "position", "window", "seeds"):
        if not np.array_equal(M[key], U[key]):
            print(f"error: the two pairs were scored on different tokens or seeds ({key} differs)", file=sys.stderr)
            return 2
    arms = [k.split(".", 1)[1] for k in M if k.startswith("loss.")]
    if sorted(arms) != sorted(k.split(".", 1)[1] for k in U if k.startswith("loss.")):
        print("error: the two pairs have different arms", file=sys.stderr)
        return 2
    seeds = M["seeds"].tolist()
    _, unit = np.unique(M["doc"], return_inverse=True)
    first_window = np.zeros(len(unit), dtype=bool)
    for d in np.unique(M["doc"]):
        sel = M["doc"] == d
        first_window[sel] = M["window"][sel] == M["window"][sel].min()
    group = np.where(first_window & (M["position"] < START), 0, 1)
    boot = HierarchicalBootstrap(int(unit.max()) + 1, len(seeds), a.bootstrap, seed=0)

    def res(arrays, arm):
        return boot.means(arrays[f"loss.{arm}"], unit), boot.means(arrays[f"loss.{arm}"], unit, group, 2)

    R = {name: {arm: res(arrays, arm) for arm in arms} for name, arrays in (("masked", M), ("unmasked", U))}
    out = {"kind": "document-mask-effect", "units": "nats/token", "seeds": seeds,
           "n_tokens": int(len(unit)), "n_docs": int(unit.max()) + 1,
           "groups": {"start": f"positions 0-{START - 1} of each document's first window",
                      "rest": "all other held-out tokens"},
           "group_tokens": {"start": int((group == 0).sum()), "rest": int((group == 1).sum())},
           "loss": {}, "loss_change": {}, "gap": {}, "gap_change": {}, "null": {},
           "pairs": {"masked": str(a.masked), "unmasked": str(a.unmasked)},
           "configs": {n: read_json(Path(d) / "pair.json").get("train") if (Path(d) / "pair.json").is_file()
                       else None for n, d in (("masked", a.masked), ("unmasked", a.unmasked))},
           **provenance()}

    def both(r):
        all_, grouped = r
        return {"all": all_.summary(), "start": grouped.summary(0), "rest": grouped.summary(1)}

    def combine(x, y, fn):
        return fn(x[0], y[0]), fn(x[1], y[1])

    sub = lambda x, y: x - y  # noqa: E731
    for arm in arms:
        out["loss"][arm] = {n: both(R[n][arm]) for n in R}
        out["loss_change"][arm] = both(combine(R["masked"][arm], R["unmasked"][arm], sub))
        if arm == "vanilla":
            continue
        gaps = {n: combine(R[n][arm], R[n]["vanilla"], sub) for n in R}
        out["gap"][arm] = {n: both(g) for n, g in gaps.items()}
        out["gap_change"][arm] = both(combine(gaps["masked"], gaps["unmasked"], sub))
    for name, arrays in (("masked", M), ("unmasked", U)):
        out["null"][name] = null_gap(arrays["loss.vanilla"], M["doc"], n_boot=a.bootstrap)

    print(f"{len(seeds)} seeds, {out['n_docs']} held-out documents, {out['n_tokens']:,} tokens "
          f"({out['group_tokens']['start']:,} at document starts)")
    print(f"{'':<16}{'masked - unmasked loss':>34}{'gap (masked)':>34}{'gap (unmasked)':>34}{'gap change':>34}")
    for arm in arms:
        row = f"{arm:<16}{format_interval(out['loss_change'][arm]['all']):>34}"
        if arm != "vanilla":
            row += (f"{format_interval(out['gap'][arm]['masked']['all']):>34}"
                    f"{format_interval(out['gap'][arm]['unmasked']['all']):>34}"
                    f"{format_interval(out['gap_change'][arm]['all']):>34}")
        print(row)
    print("document starts only:")
    for arm in arms:
        row = f"{arm:<16}{format_interval(out['loss_change'][arm]['start']):>34}"
        if arm != "vanilla":
            row += f"{'':>68}{format_interval(out['gap_change'][arm]['start']):>34}"
        print(row)
    for name, n in out["null"].items():
        if n:
            print(f"null ({name}): vanilla seed vs seed sd {n['sd']:.4f}, ci95 [{n['ci95'][0]:+.4f}, {n['ci95'][1]:+.4f}]")
    if a.json:
        Path(a.json).write_text(json.dumps(out, indent=1))
        print(f"-> {a.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
