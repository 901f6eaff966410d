"""How much in-context copying can pay in a window: the fraction of bytes an exact-match copier would predict.

For each window of W bytes of the training documents (non-overlapping, from each document's start) and each
position t ≥ k, the copier looks for the k bytes before t earlier in the window; when they occur there and the byte
after that earlier occurrence (the most recent one) equals byte t, byte t is "copyable at k". The fraction of
copyable bytes bounds what an induction head can add over a model that does not read the window (issue 29: why the
Brown byte pair at context 128 does not learn to copy).

    PYTHONPATH=src python dev/copyable_bytes.py --source CORPUS --windows 128,512 --k 4,8,16
"""

from __future__ import annotations

import argparse
import json
import sys

import numpy as np

from myopia.data.corpus import assign_splits
from myopia.data.sources import read_text_documents


def copyable(window: bytes, k: int) -> tuple[int, int]:
    """(copyable bytes, scored bytes) of one window at match length k."""
    hits = 0
    for t in range(k, len(window)):
        j = window.rfind(window[t - k:t], 0, t - 1)  # an earlier occurrence that ends before t - 1
        hits += j >= 0 and window[j + k] == window[t]
    return hits, max(len(window) - k, 0)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--source", required=True)
    p.add_argument("--windows", default="128,512")
    p.add_argument("--k", default="4,8,16")
    p.add_argument("--max-windows", type=int, default=4000, help="per window length, spread over the documents")
    p.add_argument("--val-frac", type=float, default=0.05)
    p.add_argument("--test-frac", type=float, default=0.2)
    p.add_argument("--split-seed", type=int, default=0)
    a = p.parse_args(argv)
    docs = read_text_documents(a.source)
    train = np.flatnonzero(assign_splits(len(docs), a.val_frac, a.test_frac, a.split_seed) == 0)
    texts = [docs[i].text.encode("utf-8") for i in train]
    out = {}
    for W in (int(w) for w in a.windows.split(",")):
        wins = [t[s:s + W] for t in texts for s in range(0, len(t) - W + 1, W)]
        wins = [wins[i] for i in np.linspace(0, len(wins) - 1, min(a.max_windows, len(wins))).astype(int)]
        for k in (int(x) for x in a.k.split(",")):
            h = np.array([copyable(w, k) for w in wins])
            out[f"W{W}_k{k}"] = {"copyable_fraction": float(h[:, 0].sum() / h[:, 1].sum()), "windows": len(wins)}
            print(f"window {W:5d} bytes, k {k:2d}: {out[f'W{W}_k{k}']['copyable_fraction']:.4f} of bytes copyable "
                  f"({len(wins)} windows)", flush=True)
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
