"""myopia grad: myopic vs future gradient decomposition of checkpoints (ours or Hugging Face)."""

from __future__ import annotations

from .common import add_data_args, data_options


def register(sub) -> None:
    """Add the ``myopia grad`` parser to ``sub`` (the subparsers of :func:`myopia.cli.build_parser`)."""
    p = sub.add_parser(
        "grad",
        help="split checkpoints' gradients into myopic (diagonal) and future (off-diagonal) parts",
        description="For each checkpoint (run directory, weights file in a run, Hugging Face directory or hub "
        "name) compute on the same data sample the total gradient, the myopic gradient (strict and hidden-state) "
        "and future = total - myopic; report norms, cosines and the future share per layer and parameter group. "
        "Writes OUT/grad.json and OUT/grad.png (the dynamics over a series of checkpoints).",
    )
    p.add_argument("checkpoints", nargs="+", metavar="CHECKPOINT", help="checkpoints, in training order")
    p.add_argument("--out", required=True, help="output directory")
    add_data_args(p, tokenizer_help="the checkpoints' own tokenizer (default); if given it must be theirs (checked)")
    p.add_argument("--split", default="val", choices=["train", "val", "test"], help="data split (default val)")
    p.add_argument("--windows", type=int, default=16, help="windows in the sample (default %(default)s)")
    p.add_argument("--seq-len", type=int, default=None, help="tokens per window (default: the run's, or 64)")
    p.add_argument("--snapshots", action="store_true", help="expand run directories into their snapshots")
    p.add_argument("--micro-batch", type=int, default=16, help="windows per forward/backward")
    p.add_argument("--device", default="cpu", help="cpu, cuda, ...")
    p.add_argument("--no-plot", action="store_true", help="write grad.json only (no grad.png)")
    p.set_defaults(func=run)


def run(args) -> int:
    """Run ``myopia grad`` with the parsed arguments; returns the exit status."""
    from transformers.utils import logging as hf_logging

    from ..experiments.grad import grad_decomposition

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    summary = grad_decomposition(args.checkpoints, args.data, args.out, split=args.split, windows=args.windows,
                                 seq_len=args.seq_len, snapshots=args.snapshots, device=args.device,
                                 micro_batch=args.micro_batch, plot=not args.no_plot,
                                 data_opts=data_options(args), tokenizer_spec=args.tokenizer)
    def num(v, spec):
        return "n/a" if v is None else format(v, spec)

    for r in summary["results"]:
        cells = []
        for part in summary["parts"]:
            g = r[part]
            if "error" in g:
                cells.append(f"{part}: {g['error']}")
                continue
            a = g["all"]
            cells.append(f"{part}: |total| {num(a['norm_total'], '.3g')} |myopic| {num(a['norm_myopic'], '.3g')} "
                         f"|future| {num(a['norm_future'], '.3g')} cos {num(a['cos_myopic_future'], '+.3f')} "
                         f"future share {num(a['future_share'], '.3f')}")
        step = "" if r["step"] is None else f" (step {r['step']})"
        print(f"{r['checkpoint']}{step}: loss {r['loss']:.4f}\n  " + "\n  ".join(cells))
    print(f"-> {args.out}/grad.json")
    return 0
