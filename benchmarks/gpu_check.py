"""GPU check for the Hugging Face integration: one command, under 5 minutes on one H100.

    PYTHONPATH=src python benchmarks/gpu_check.py --out "$OUT"            # on a GPU machine
    PYTHONPATH=src python benchmarks/gpu_check.py --dry-run --out /tmp/gc  # tiny sizes on the CPU (plumbing)
    PYTHONPATH=src python benchmarks/gpu_check.py --dry-run --size small --sections speed --out /tmp/gc  # CPU timing

Sections (each one is timed, and a failure is recorded without stopping the others):

1. ``exactness``: tiny float32 GPT-2 / GPT-NeoX / Llama(GQA) models on the device; the myopic and
   myopic-hidden parameter gradients against the position-by-position brute force (HF key/value cache from a
   no-grad pass, only the last token live), and logits against the unmodified model.
2. ``speed``: GPT-2-small-sized (124M) and Pythia-160M-sized random models, bf16 autocast, AdamW steps:
   median step time, tokens/s and peak memory for vanilla (the model's own sdpa), myopic and myopic-hidden.
3. ``finetune``: the `myopia finetune` protocol for a few steps on a Pythia-160M-sized random model with the
   byte-level tokenizer (bf16, three arms) on a shared corpus if present, else generated text.

Writes ``gpu_check.json`` (numbers, device, versions) to --out and prints a table.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
import traceback
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from myopia.hf import apply  # noqa: E402
from myopia.io import provenance, write_json  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


SIZES = {
    "tiny": {"gpt2": dict(n_embd=64, n_layer=2, n_head=4, vocab=512, seq=128, batch=4),
             "pythia": dict(n_embd=64, n_layer=2, n_head=4, vocab=512, seq=128, batch=4),
             "steps": 3, "warmup": 1, "ft_steps": 2, "ft_batch": 4},
    "small": {"gpt2": dict(n_embd=256, n_layer=4, n_head=4, vocab=4096, seq=256, batch=8),
              "pythia": dict(n_embd=256, n_layer=4, n_head=4, vocab=4096, seq=256, batch=8),
              "steps": 5, "warmup": 1, "ft_steps": 5, "ft_batch": 16},
    "full": {"gpt2": dict(n_embd=768, n_layer=12, n_head=12, vocab=50257, seq=1024, batch=8),
             "pythia": dict(n_embd=768, n_layer=12, n_head=12, vocab=50304, seq=1024, batch=8),
             "steps": 10, "warmup": 3, "ft_steps": 10, "ft_batch": 32},
}


def build(arch: str, s: dict):
    import transformers as tr

    if arch == "gpt2":
        cfg = tr.GPT2Config(vocab_size=s["vocab"], n_positions=max(1024, s["seq"]), n_embd=s["n_embd"],
                            n_layer=s["n_layer"], n_head=s["n_head"], attn_pdrop=0.0, resid_pdrop=0.0,
                            embd_pdrop=0.0)
        return tr.GPT2LMHeadModel(cfg)
    cfg = tr.GPTNeoXConfig(vocab_size=s["vocab"], hidden_size=s["n_embd"], num_hidden_layers=s["n_layer"],
                           num_attention_heads=s["n_head"], intermediate_size=4 * s["n_embd"],
                           max_position_embeddings=2048, use_parallel_residual=True,
                           rope_parameters={"rope_type": "default", "rope_theta": 10000.0,
                                            "partial_rotary_factor": 0.25})
    return tr.GPTNeoXForCausalLM(cfg)


# ------------------------------------------------------------------------------------------------------------
# 1. exactness on the device
# ------------------------------------------------------------------------------------------------------------


def exactness(device) -> dict:
    import transformers as tr

    torch.manual_seed(0)
    models = {
        "gpt2": tr.GPT2LMHeadModel(tr.GPT2Config(vocab_size=97, n_positions=64, n_embd=64, n_layer=2, n_head=4,
                                                 attn_pdrop=0.0, resid_pdrop=0.0, embd_pdrop=0.0)),
        "pythia": tr.GPTNeoXForCausalLM(tr.GPTNeoXConfig(vocab_size=97, hidden_size=64, num_hidden_layers=2,
                                                         num_attention_heads=4, intermediate_size=128)),
        "llama-gqa": tr.LlamaForCausalLM(tr.LlamaConfig(vocab_size=97, hidden_size=64, num_hidden_layers=2,
                                                        num_attention_heads=4, num_key_value_heads=2,
                                                        intermediate_size=128)),
    }
    x = torch.randint(0, 97, (2, 13), device=device)
    out = {}
    for name, model in models.items():
        model = model.to(device).float().eval()
        params = list(model.parameters())

        def loss_of(m):
            logits = m(x[:, :-1], use_cache=False).logits
            return F.cross_entropy(logits.flatten(0, 1), x[:, 1:].flatten(), reduction="sum"), logits

        ref_loss, ref_logits = loss_of(model)
        brute = 0.0
        for i in range(x.shape[1] - 1):
            if i == 0:
                logit = model(x[:, :1], use_cache=False).logits[:, -1]
            else:
                with torch.no_grad():
                    cache = model(x[:, :i], use_cache=True).past_key_values
                logit = model(x[:, i : i + 1], cache=cache, use_cache=True).logits[:, -1]
            brute = brute + F.cross_entropy(logit, x[:, i + 1], reduction="sum")
        want = {"myopic": torch.autograd.grad(brute, params),
                "myopic-hidden": torch.autograd.grad(hidden_brute_force(model, x), params)}
        out[name] = {}
        for mode in ("myopic", "myopic-hidden"):
            apply(model, mode)
            loss, logits = loss_of(model)
            got = torch.autograd.grad(loss, params)
            rel = max(((a - b).norm() / b.norm().clamp_min(1e-30)).item() for a, b in zip(got, want[mode]))
            out[name][mode] = {"grad_max_rel_err": rel, "logits_max_abs_diff": (logits - ref_logits).abs().max().item()}
        apply(model, "vanilla")
    return out


def hidden_brute_force(model, x):
    """sum_i loss_i with every attention layer's input at positions < i replaced by no-grad constants."""
    layers = [m for m in model.modules() if type(m).__name__.endswith("Attention") and hasattr(m, "layer_idx")]
    const = {}

    def arg(args, kwargs):
        return kwargs["hidden_states"] if "hidden_states" in kwargs else args[0]

    handles = [m.register_forward_pre_hook(lambda m, a, k: const.__setitem__(m, arg(a, k).detach()),
                                           with_kwargs=True) for m in layers]
    with torch.no_grad():
        model(x[:, :-1], use_cache=False)
    for h in handles:
        h.remove()
    total = 0.0
    for i in range(x.shape[1] - 1):
        def splice(m, args, kwargs, i=i):
            mixed = torch.cat([const[m][:, :i], arg(args, kwargs)[:, i : i + 1]], dim=1)
            if "hidden_states" in kwargs:
                return args, {**kwargs, "hidden_states": mixed}
            return (mixed, *args[1:]), kwargs

        handles = [m.register_forward_pre_hook(splice, with_kwargs=True) for m in layers]
        try:
            logit = model(x[:, : i + 1], use_cache=False).logits[:, -1]
        finally:
            for h in handles:
                h.remove()
        total = total + F.cross_entropy(logit, x[:, i + 1], reduction="sum")
    return total


# ------------------------------------------------------------------------------------------------------------
# 2. speed and memory
# ------------------------------------------------------------------------------------------------------------


def time_steps(model, batch, steps, warmup, device, precision) -> dict:
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16")
    times = []
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    for i in range(warmup + steps):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        with autocast:
            logits = model(batch[:, :-1], use_cache=False).logits
        loss = F.cross_entropy(logits.float().flatten(0, 1), batch[:, 1:].flatten())
        loss.backward()
        opt.step()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        if i >= warmup:
            times.append(time.perf_counter() - t0)
    med = statistics.median(times)
    res = {"step_s_median": med, "step_s_min": min(times), "tokens_per_s": batch[:, 1:].numel() / med,
           "loss": loss.item()}
    if device.type == "cuda":
        res["peak_mem_gib"] = torch.cuda.max_memory_allocated(device) / 2**30
    return res


def speed(device, s: dict, precision: str) -> dict:
    out = {}
    for arch in ("gpt2", "pythia"):
        cfg = s[arch]
        torch.manual_seed(0)
        model = build(arch, cfg).to(device)
        model.train()
        batch = torch.randint(0, cfg["vocab"], (cfg["batch"], cfg["seq"] + 1), device=device)
        init = {k: v.clone() for k, v in model.state_dict().items()}
        out[arch] = {"params_M": sum(p.numel() for p in model.parameters()) / 1e6, "batch": cfg["batch"],
                     "seq_len": cfg["seq"]}
        for mode in ("vanilla", "myopic", "myopic-hidden"):
            model.load_state_dict(init)
            apply(model, mode)
            try:
                out[arch][mode] = time_steps(model, batch, s["steps"], s["warmup"], device, precision)
            except Exception as exc:  # record and go on (e.g. out of memory)
                out[arch][mode] = {"error": f"{type(exc).__name__}: {exc}"}
            print(f"  {arch:7s} {mode:14s} {json.dumps(out[arch][mode])}", flush=True)
        apply(model, "vanilla")
        for mode in ("myopic", "myopic-hidden"):
            if "error" not in out[arch][mode] and "error" not in out[arch]["vanilla"]:
                out[arch][f"{mode}_time_ratio"] = out[arch][mode]["step_s_median"] / out[arch]["vanilla"][
                    "step_s_median"]
        del model
        if device.type == "cuda":
            torch.cuda.empty_cache()
    return out


# ------------------------------------------------------------------------------------------------------------
# 3. the fine-tune protocol
# ------------------------------------------------------------------------------------------------------------


def corpus_path(tmp: Path) -> Path:
    shared = Path(os.environ.get("MYOPIA_SHARED_DATA", ROOT.parent / "shared" / "data"))
    if (shared / "tinyshakespeare.txt").exists():
        return shared / "tinyshakespeare.txt"
    import random

    rng = random.Random(0)
    words = "the cat sat on a mat and the dog ran far away from home at night".split()
    docs = [" ".join(rng.choice(words) for _ in range(rng.randint(50, 200))) for _ in range(400)]
    path = tmp / "generated.txt"
    path.write_text("\n\n".join(docs))
    return path


def finetune_protocol(device, s: dict, precision: str, tmp: Path) -> dict:
    from myopia.experiments.finetune import finetune
    from myopia.hf.tokenizer import bytes_tokenizer
    from myopia.train import TrainConfig

    torch.manual_seed(0)
    base = tmp / "pythia-random"
    build("pythia", s["pythia"]).save_pretrained(base)
    bytes_tokenizer().save_pretrained(base)
    data = corpus_path(tmp)
    cfg = TrainConfig(steps=s["ft_steps"], batch_size=s["ft_batch"], lr=3e-4, eval_every=0, ckpt_every=0,
                      log_every=1, device=str(device), precision=precision, progress=False)
    t0 = time.perf_counter()
    summary = finetune(str(base), data, tmp / "ft", cfg, seq_len=64, eval_tokens=8192)
    return {"data": str(data), "wall_s": time.perf_counter() - t0, "steps": cfg.steps, "batch": cfg.batch_size,
            "arms": summary["arms"], "gap_vs_vanilla": summary["gap_vs_vanilla"]}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default=os.environ.get("OUT", "gpu_check_out"), help="output directory")
    p.add_argument("--dry-run", action="store_true", help="tiny sizes on the CPU (checks the plumbing)")
    p.add_argument("--sections", default="exactness,speed,finetune")
    p.add_argument("--size", choices=["auto", *SIZES], default="auto",
                   help="model sizes: auto = full on a GPU, tiny on the CPU; small = a CPU timing size")
    args = p.parse_args()
    import transformers

    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    device = torch.device("cpu" if args.dry_run or not torch.cuda.is_available() else "cuda")
    precision = "bf16" if device.type == "cuda" else "fp32"
    size = args.size if args.size != "auto" else ("tiny" if device.type == "cpu" else "full")
    s = SIZES[size]
    out = Path(args.out)
    report = {"device": torch.cuda.get_device_name(0) if device.type == "cuda" else "cpu", "precision": precision,
              "dry_run": args.dry_run or device.type == "cpu", "size": size, "sizes": s, **provenance()}
    with tempfile.TemporaryDirectory() as tmp:
        for section in args.sections.split(","):
            t0 = time.perf_counter()
            print(f"== {section}", flush=True)
            try:
                if section == "exactness":
                    report[section] = exactness(device)
                elif section == "speed":
                    report[section] = speed(device, s, precision)
                elif section == "finetune":
                    report[section] = finetune_protocol(device, s, precision, Path(tmp))
                else:
                    raise ValueError(f"unknown section {section}")
            except Exception as exc:
                report[section] = {"error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc()}
            report[section]["section_wall_s"] = time.perf_counter() - t0
            print(json.dumps(report[section], indent=1, default=str)[:3000], flush=True)
            write_json(out / "gpu_check.json", report)
    print(f"-> {out / 'gpu_check.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
