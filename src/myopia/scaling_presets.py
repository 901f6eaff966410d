"""Size ladders and budgets for ``myopia sweep``: a CPU ladder for a small machine and GPU ladders up to GPT-2 small.

A ladder is a list of widths plus two rules a user can override: depth = max(1, round(width / aspect)) and
heads = width // head_dim (reduced until it divides the width). The learning rate may shrink with width:
lr(d) = lr * (lr_ref_width / d) ** 0.5 (capped at ``lr_max``), or stay constant when ``lr_ref_width`` is 0.

Token budgets are absolute ("2M", "500k", "1.5e6") or per non-embedding parameter ("20N", Chinchilla's ratio).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .arms import PAIR_ARMS


@dataclass(frozen=True)
class SweepPreset:
    name: str
    description: str
    widths: tuple[int, ...]
    aspect: int  # d_model / n_layer
    head_dim: int
    seq_len: int
    batch_size: int
    tokens: tuple[str, ...]
    lr: float
    lr_ref_width: int = 0  # 0: constant lr
    lr_max: float = 3e-3
    warmup_frac: float = 0.01
    weight_decay: float = 0.1
    min_lr_ratio: float = 0.1
    eval_tokens: int = 262144
    precision: str = "fp32"
    gradients: tuple[str, ...] = PAIR_ARMS
    seeds: tuple[int, ...] = (0,)  # CPU presets train 3 seeds (training noise measured); GPU ones 1 unless asked
    extra: dict = field(default_factory=dict)


PRESETS: dict[str, SweepPreset] = {
    # 2-core CPU: 5 sizes, 1 layer x 32 (12.5k non-embedding parameters) to 4 layers x 128 (0.79M), 63x; three
    # budgets (0.5M, 1M, 4M tokens; three so that L(N, D) is identifiable). 45 runs; about 1 h of a quiet machine.
    "cpu": SweepPreset(
        name="cpu",
        description="2-core CPU: 1x32 .. 4x128 (12.5k-0.79M non-embedding params), context 128, batch 32, "
        "0.5M, 1M and 4M tokens per run",
        widths=(32, 48, 64, 96, 128),
        aspect=32,
        head_dim=32,
        seq_len=128,
        batch_size=32,
        tokens=("0.5M", "1M", "4M"),
        lr=2e-3,
        seeds=(0, 1, 2),
    ),
    # The paper's 64-token setting; GPT-2 small (12 x 768, 85M non-embedding, 124M with a 50257 vocabulary) on top.
    "gpu-64": SweepPreset(
        name="gpu-64",
        description="one GPU, the paper's 64-token contexts: 2x128 .. 12x768 (GPT-2 small), 20 tokens/parameter",
        widths=(128, 256, 384, 512, 768),
        aspect=64,
        head_dim=64,
        seq_len=64,
        batch_size=512,
        tokens=("20N",),
        lr=6e-4,
        lr_ref_width=768,
        lr_max=3e-3,
        eval_tokens=1048576,
        precision="bf16",
    ),
    "gpu-256": SweepPreset(
        name="gpu-256",
        description="one GPU, 256-token contexts (where the per-position gap has room to grow): 2x128 .. 12x768, "
        "20 tokens/parameter",
        widths=(128, 256, 384, 512, 768),
        aspect=64,
        head_dim=64,
        seq_len=256,
        batch_size=128,
        tokens=("20N",),
        lr=6e-4,
        lr_ref_width=768,
        lr_max=3e-3,
        eval_tokens=1048576,
        precision="bf16",
    ),
}


def isoflop_presets() -> dict[str, dict]:
    """The IsoFLOP presets, ``recipes/isoflop.toml`` (name -> table of IsoFlopSettings fields, ``description``,
    ``estimate``); see :mod:`myopia.recipe_files`."""
    from .recipe_files import read_recipe_file

    return read_recipe_file("isoflop")


def isoflop_preset_settings(name: str) -> dict:
    """Keyword arguments of :class:`myopia.experiments.isoflop.IsoFlopSettings` for the preset ``name``."""
    from .errors import MyopiaError

    presets = isoflop_presets()
    if name not in presets:
        raise MyopiaError(f"no IsoFLOP preset {name!r} (known: {', '.join(presets)})")
    kw = {k: v for k, v in presets[name].items() if k not in ("description", "estimate")}
    if "ratio_range" in kw:
        kw["ratio_range"] = tuple(kw["ratio_range"])
    return {**kw, "preset": name}
