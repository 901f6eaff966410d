"""myopia export: one of our GPT runs as a standard transformers (GPT-NeoX) model directory."""

from __future__ import annotations


def register(sub) -> None:
    """Add the ``myopia export`` parser to ``sub`` (the subparsers of :func:`myopia.cli.build_parser`)."""
    p = sub.add_parser(
        "export",
        help="save a trained GPT run as a transformers GPT-NeoX model (AutoModelForCausalLM, lm-eval-harness)",
        description="Convert RUN_DIR's model.safetensors (or --weights) to a GPTNeoXForCausalLM directory with "
        "identical logits; byte-level runs also get a matching Hugging Face tokenizer.",
    )
    p.add_argument("run_dir", metavar="RUN_DIR", help="a run directory of ours (myopia train / pair)")
    p.add_argument("--out", required=True, help="new directory for the transformers model")
    p.add_argument("--weights", default=None, help="another weights file of the run (snapshot, checkpoint)")
    p.set_defaults(func=run)


def run(args) -> int:
    """Run ``myopia export`` with the parsed arguments; returns the exit status."""
    from transformers.utils import logging as hf_logging

    from ..hf.export import export_run

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    summary = export_run(args.run_dir, args.out, weights=args.weights)
    tok = "with" if summary["tokenizer"] else "without"
    print(f"exported {args.run_dir} as {summary['architecture']} ({tok} tokenizer) -> {args.out}")
    return 0
