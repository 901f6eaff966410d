"""Cost of ``myopia gap`` with S seeds against one seed, measured in one process (the ratio is what counts).

Usage: python benchmarks/bench_gap.py PAIR_DIR [--bootstrap 2000]

The one-seed run scores a view of the pair that holds only its first seed (a temporary folder linking the same run
folders and token cache); the full run scores every seed. Both write into their own folders (the pair's own
gap.json is untouched unless ``--in-place``). ``myopia gap`` is one pass per checkpoint and vectorised bootstrap
replicates, so the S-seed run should cost at most S times the one-seed run. Measured on the 3-seed Brown pair
of docs/statistics.md: 146.6 s vs 71.3 s, ratio 2.06 (one core of the shared 2-core CPU machine, 2026-12-01).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path


def view(pair_dir: Path, seeds: list[int], where: Path) -> Path:
    """A pair folder with only ``seeds``: its own pair.json, links to the runs and the cache."""
    m = json.loads((pair_dir / "pair.json").read_text())
    m["seeds"] = seeds
    m["runs"] = {a: {s: r for s, r in runs.items() if int(s) in seeds} for a, runs in m["runs"].items()}
    where.mkdir(parents=True)
    (where / "pair.json").write_text(json.dumps(m))
    (where / "runs").symlink_to((pair_dir / "runs").resolve())
    cache = Path(m["data"]["cache"])
    if not cache.is_absolute():
        (where / cache).symlink_to((pair_dir / cache).resolve())
    return where


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("pair_dir")
    ap.add_argument("--bootstrap", type=int, default=2000)
    ap.add_argument("--in-place", action="store_true",
                    help="score all seeds in PAIR_DIR itself (writes its gap.json, as `myopia gap PAIR_DIR`)")
    args = ap.parse_args()
    from myopia.experiments.gap import run_gap

    pair_dir = Path(args.pair_dir)
    seeds = json.loads((pair_dir / "pair.json").read_text())["seeds"]
    tmp = Path(tempfile.mkdtemp(prefix="bench-gap-"))
    try:
        times = {}
        for label, chosen in (("1 seed", seeds[:1]), (f"{len(seeds)} seeds", seeds)):
            full = len(chosen) == len(seeds)
            d = pair_dir if full and args.in_place else view(pair_dir, chosen, tmp / label.replace(" ", "-"))
            t0 = time.perf_counter()
            g = run_gap(d, n_boot=args.bootstrap, progress=False)
            times[label] = time.perf_counter() - t0
            print(f"{label}: {times[label]:.1f} s ({g['n_tokens']:,} tokens, {len(g['arms'])} arms)", flush=True)
        one, many = times["1 seed"], times[f"{len(seeds)} seeds"]
        print(f"ratio {many / one:.2f} for {len(seeds)} seeds (bound: {len(seeds)})")
    finally:
        shutil.rmtree(tmp)
    return 0


if __name__ == "__main__":
    sys.exit(main())
