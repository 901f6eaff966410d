"""myopia generate: sample text from a trained run (ours or a fine-tune) or a Hugging Face model."""

from __future__ import annotations

from ..errors import MyopiaError


def register(sub) -> None:
    """Add the ``myopia generate`` parser to ``sub`` (the subparsers of :func:`myopia.cli.build_parser`)."""
    p = sub.add_parser("generate", help="sample text from a trained model",
                       description="Continue a prompt with a trained model: a run folder (myopia train / pair / "
                       "finetune), a weights file inside one, or a Hugging Face directory. Prints the prompt and "
                       "its continuation on stdout.")
    p.add_argument("checkpoint", metavar="CHECKPOINT", help="run folder, weights file or Hugging Face directory")
    p.add_argument("--prompt", default="\n", help="text to continue (default: a newline)")
    p.add_argument("--tokens", type=int, default=200, help="new tokens to sample (default %(default)s)")
    p.add_argument("--temperature", type=float, default=0.8,
                   help="softmax temperature; 0 takes the most likely token (default %(default)s)")
    p.add_argument("--top-k", type=int, default=None, help="sample among the k most likely tokens (default: all)")
    p.add_argument("--samples", type=int, default=1, help="independent continuations (default %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="seed of the sampler (default %(default)s)")
    p.add_argument("--device", default="cpu", help="cpu, cuda, ... (default %(default)s)")
    p.set_defaults(func=run)


def run(args) -> int:
    """Run ``myopia generate`` with the parsed arguments; returns the exit status."""
    import torch

    from ..rundir import load_model
    from ..sampling import generate

    if args.samples < 1:
        raise MyopiaError(f"--samples must be at least 1, got {args.samples}")
    model, tokenizer, _ = load_model(args.checkpoint, device=args.device)
    prompt = tokenizer.encode(args.prompt)
    if not prompt:
        raise MyopiaError("the prompt encodes to no tokens; give a non-empty --prompt")
    context = getattr(getattr(model, "cfg", None), "seq_len", None) or len(prompt) + args.tokens
    idx = torch.tensor([prompt] * args.samples, device=args.device)
    out = generate(model, idx, args.tokens, context=context, temperature=args.temperature, top_k=args.top_k,
                   generator=torch.Generator(device=args.device).manual_seed(args.seed),
                   stop_id=getattr(tokenizer, "eos_id", None))
    for i, row in enumerate(out.tolist()):
        if args.samples > 1:
            print(f"--- sample {i + 1}")
        print(args.prompt + tokenizer.decode(row[len(prompt):]))
    return 0
