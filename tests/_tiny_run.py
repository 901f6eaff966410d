"""CLI arguments of a tiny training run, shared by the CLI and distributed tests."""


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
