"""The planted positive control for text (issue 29, item 6): plant, then read the answers' gap.

Construction: ``myopia.synthetic.planted_text`` (fixed before any run; docs/natural-language.md). This script
does the two steps around the ordinary pipeline (``myopia pair`` -> ``gap`` -> ``tasks``):

    # 1. plant a corpus at one strength; the answers of the TEST documents become a user task
    PYTHONPATH=src python dev/planted_control.py plant --source CORPUS --out DIR --strength 1 \
        --n-slots 2 --keys 0123456789 --rate 10
    #    -> DIR/corpus/<slice>.txt, DIR/answers.jsonl, DIR/plant.json
    # 2. after `myopia tasks PAIR --user DIR/answers.jsonl`: the answer loss against the marginal-only loss
    PYTHONPATH=src python dev/planted_control.py read --plant DIR --tasks PAIR/tasks.json

The test documents are those of ``assign_splits(n_docs, val_frac, test_frac, split_seed)`` in the source's
document order, i.e. the split ``myopia pair`` makes of the planted folder (same documents, same order).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import numpy as np

from myopia.data.corpus import assign_splits
from myopia.data.sources import read_text_documents
from myopia.analysis.stats import power_entry, seeds_needed
from myopia.io import provenance, write_json
from myopia.synthetic.planted_text import KEYS, RULES, plant_folder, write_task_file


def marginal_loss(n_slots: int, answers) -> float:
    """Mean -log Binomial(a; n_slots, 1/2) over the answers (nats): the loss of a model that knows only the
    answer's marginal (every strength has this marginal; strength 0 has nothing more to learn)."""
    return float(np.mean([-math.log(math.comb(n_slots, a) / 2 ** n_slots) for a in answers]))


def cmd_plant(a) -> None:
    n_docs = len(read_text_documents(a.source))
    test = np.flatnonzero(assign_splits(n_docs, a.val_frac, a.test_frac, a.split_seed) == 2)
    out = Path(a.out)
    summary = plant_folder(a.source, out / "corpus", out / "answers.jsonl", strength=a.strength,
                           task_docs=test.tolist(), n_slots=a.n_slots, rate=a.rate, seed=a.seed, keys=a.keys,
                           rule=a.rule)
    items = [json.loads(line) for line in (out / "answers.jsonl").read_text().splitlines()]
    if a.max_items and len(items) > a.max_items:  # every k-th answer, in document order: fixed before scoring
        items = items[:: math.ceil(len(items) / a.max_items)]
        write_task_file(out / "answers.jsonl", items)
    summary.update({"test_documents": len(test), "answers_scored": len(items),
                    "max_items": a.max_items,
                    "marginal_loss": marginal_loss(a.n_slots, [int(it["continuation"]) for it in items]),
                    "split": {"val_frac": a.val_frac, "test_frac": a.test_frac, "split_seed": a.split_seed},
                    "provenance": provenance()})
    write_json(out / "plant.json", summary)
    print(json.dumps({k: v for k, v in summary.items() if k != "provenance"}, indent=1))


LEARNT_NATS = 0.1  # the protocol's rule: vanilla learnt the rule when its answer loss is this far below the marginal


def cmd_read(a) -> None:
    plant = json.loads((Path(a.plant) / "plant.json").read_text())
    tasks = json.loads(Path(a.tasks).read_text())
    marginal = plant["marginal_loss"]
    rec = next(v for k, v in tasks["tasks"].items() if k.startswith("user:"))
    print(f"strength {plant['strength']:g}: {plant['answers_scored']} answers scored; a model that knows only the "
          f"answer's marginal: {marginal:.3f} nats")
    for arm, r in rec["loss"].items():
        seeds = ", ".join(f"{x:.3f}" for x in r["per_seed"])
        print(f"  answer loss {arm:<14} {r['mean']:.3f} [{r['ci95'][0]:.3f}, {r['ci95'][1]:.3f}]  per seed {seeds}")
    learnt = [x <= marginal - LEARNT_NATS for x in rec["loss"][tasks["baseline"]]["per_seed"]]
    print(f"  {tasks['baseline']} learnt the rule (>= {LEARNT_NATS} nats below the marginal) on {sum(learnt)} of "
          f"{len(learnt)} seeds")
    context = rec["value_of_context"]["mean"]
    info = marginal - rec["loss"][tasks["baseline"]]["mean"]  # what vanilla learnt of the rule (nats per answer)
    half = []
    for arm, g in rec["gap"].items():
        found = "detected" if g["ci95"][0] > 0 and g.get("p_holm", 1) < 0.05 else "not detected"
        pw = power_entry(g, context)
        mdg = "n/a" if pw["min_detectable_gap"] is None else f"{pw['min_detectable_gap']:.3f}"
        print(f"  answers' gap {arm:<14} {g['mean']:+.3f} [{g['ci95'][0]:+.3f}, {g['ci95'][1]:+.3f}] "
              f"p_holm {g.get('p_holm', float('nan')):.3g}: {found}; seed sd {pw['seed_sd'] or 0:.3f}, smallest "
              f"detectable gap (80%, {pw['n_seeds']} seeds) {mdg} nats, seeds for 5% of the value of context "
              f"({0.05 * context:.3f} nats): {pw['seeds_for_5pct']}")
        if info > 0 and pw["seed_sd"] is not None and pw["doc_se"] is not None:
            half.append(f"  seeds for {arm} to detect half of what vanilla learnt ({info / 2:.3f} nats): "
                        f"{seeds_needed(info / 2, pw['seed_sd'], pw['doc_se'])}")
    for line in half:
        print(line)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    q = sub.add_parser("plant")
    q.add_argument("--source", required=True)
    q.add_argument("--out", required=True)
    q.add_argument("--strength", type=float, required=True)
    q.add_argument("--n-slots", type=int, default=4)
    q.add_argument("--keys", default=KEYS)
    q.add_argument("--rule", default="latin", choices=RULES)
    q.add_argument("--rate", type=float, default=1.0)
    q.add_argument("--seed", type=int, default=0)
    q.add_argument("--val-frac", type=float, default=0.05)
    q.add_argument("--test-frac", type=float, default=0.2)
    q.add_argument("--split-seed", type=int, default=0)
    q.add_argument("--max-items", type=int, default=0, help="keep every k-th test answer so that at most this many "
                   "are scored (0: all)")
    r = sub.add_parser("read")
    r.add_argument("--plant", required=True)
    r.add_argument("--tasks", required=True)
    a = p.parse_args(argv)
    {"plant": cmd_plant, "read": cmd_read}[a.cmd](a)
    return 0


if __name__ == "__main__":
    sys.exit(main())
