"""A tiny training run (its CLI arguments, its model and training configs), shared by the CLI, trainer and resume tests."""

from myopia.model import GPTConfig
from myopia.train import TrainConfig


def tiny_args(data, out, *, steps=8, progress=False, **extra):
    """`myopia train` arguments of a tiny run (1 layer, width 16, context 16, global batch 6); ``extra`` become
    flags (``True`` for a bare flag)."""
    args = ["train", "--data", str(data), "--out", str(out), "--steps", str(steps), "--batch-size", "6",
            "--seq-len", "16", "--d-model", "16", "--n-layer", "1", "--n-head", "2", "--eval-every", "4",
            "--ckpt-every", "2", "--log-every", "1", "--eval-tokens", "256", "--lr", "3e-3", "--device", "cpu"]
    if not progress:
        args.append("--no-progress")
    for k, v in extra.items():
        args += [f"--{k.replace('_', '-')}"] + ([] if v is True else [str(v)])
    return args


def small_model(gradient="vanilla"):
    return GPTConfig(vocab_size=257, n_layer=2, n_head=2, d_model=32, seq_len=32, gradient=gradient)


def small_train(**kw):
    base = dict(steps=12, batch_size=8, lr=3e-3, eval_every=6, ckpt_every=4, log_every=1, progress=False)
    base.update(kw)
    return TrainConfig(**base)
