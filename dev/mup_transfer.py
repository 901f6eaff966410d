"""Width-scaled learning rate: does the best base lr transfer across widths? (development check, not a test)

A small lr sweep at 3 widths (2 layers, head size 16, context 64, batch 8, 300 WSD steps, seed 0) on a corpus,
with the hidden-matrix lr scaled by base/width (``--mup-base-width 32``) and without (standard parametrisation).
Prints, per setting and width, the validation loss at each lr and the best lr. Transfer holds when the best lr
stays within one grid step (a factor 2) across widths.

    OMP_NUM_THREADS=1 PYTHONPATH=src python dev/mup_transfer.py DATA
"""

from __future__ import annotations

import sys
import tempfile
import time

from myopia.data import LMTask, load_corpus
from myopia.lm import build_model
from myopia.model import GPTConfig
from myopia.train import TrainConfig, train

WIDTHS = (32, 64, 128)
LRS = (1.5e-3, 3e-3, 6e-3, 1.2e-2, 2.4e-2)


def run(corpus, width: int, lr: float, base: int) -> float:
    cfg = GPTConfig(vocab_size=corpus.vocab_size, n_layer=2, n_head=width // 16, d_model=width, seq_len=64)
    tc = TrainConfig(steps=300, batch_size=8, lr=lr, schedule="wsd", decay_frac=0.2, warmup_steps=15,
                     min_lr_ratio=0.0, adam_beta2=0.99, mup_base_width=base, eval_every=0, ckpt_every=0,
                     log_every=50, seed=0, device="cpu", progress=False)
    with tempfile.TemporaryDirectory() as out:
        task = LMTask(corpus, 64, seed=0, eval_tokens=32768)
        return train(build_model(cfg, 0), task, tc, out, run_config={})["eval_loss"]


def main(data: str) -> None:
    corpus = load_corpus(data)
    t0 = time.perf_counter()
    for base, label in ((32, "width-scaled lr (base width 32)"), (0, "standard (same lr everywhere)")):
        print(f"## {label}")
        for w in WIDTHS:
            losses = {lr: run(corpus, w, lr, base) for lr in LRS}
            best = min(losses, key=losses.get)
            print(f"width {w:4d}: " + "  ".join(f"{lr:g}: {v:.4f}" for lr, v in losses.items()) + f"  -> best {best:g}",
                  flush=True)
    print(f"wall {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main(sys.argv[1])
