"""Size ladders and budgets for ``myopia sweep``: a CPU ladder for a small machine and GPU ladders up to GPT-2 small.

A ladder is a list of widths plus two rules a user can override: depth = max(1, round(width / aspect)) and
heads = width // head_dim (reduced until it divides the width). The learning rate may shrink with width:
lr(d) = lr * (lr_ref_width / d) ** 0.5 (capped at ``lr_max``), or stay constant when ``lr_ref_width`` is 0.

Token budgets are absolute ("2M", "500k", "1.5e6") or per non-embedding parameter ("20N", Chinchilla's ratio).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..arms import PAIR_ARMS


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


@dataclass(frozen=True)
class IsoFlopPreset:
    """An IsoFLOP design (see :mod:`myopia.experiments.isoflop`): budgets in FLOPs and what every run shares."""

    name: str
    description: str
    budgets: tuple[float, ...]
    strict_budgets: tuple[float, ...]
    n_sizes: int
    aspect: int
    head_dim: int
    seq_len: int
    batch_size: int
    lr_grid: tuple[float, ...]
    seeds: tuple[int, ...] = (0, 1)
    frontier_seeds: tuple[int, ...] = (2,)
    n_frontier: int = 2
    ratio_range: tuple[float, float] = (5.0, 100.0)  # tokens per non-embedding parameter
    gradients: tuple[str, ...] = ("vanilla", "myopic-hidden")
    warmup_frac: float = 0.05
    eval_tokens: int = 131072
    precision: str = "fp32"
    min_width: int = 16
    max_width: int = 512
    estimate: str = ""


ISOFLOP_PRESETS: dict[str, IsoFlopPreset] = {
    # Sized to this 2-core machine (measured over the 202 runs of the first cpu-isoflop run, commit a543c0e, two
    # single-threaded shards sharing the cores with other work: wall ~= 10.8 ms x steps + FLOPs / 2.1e10 per run,
    # tiny models overhead-bound). Revised after that first run (results/isoflop-cpu, previous run in
    # docs/scaling.md), which did not bracket the optimum: at every budget 3e10-4.8e11 BOTH arms were best at the
    # smallest measured size (65-170 tokens/param), and the chosen lr sat at the grid edge in 25 of 44 cells,
    # mostly the top (6e-3) for the smallest models. Rules of this revision, decided from both arms' profiles
    # together (never from one arm, never from the gap):
    # - sizes: 5 per budget at tokens/parameter log-spaced over 15-1000, i.e. geometrically centred on ~120, the
    #   best measured ratio of both arms in the first run, with 2 sizes on each side (one size step is a factor
    #   1.5-2.3 in N at these widths, 2.6-4 in tokens/param), so an optimum up to ~8x away in tokens/param is
    #   still inside the measured range;
    # - lr grid: 1.5e-3 .. 2.4e-2 (factor 2), two values above the old top edge; still chosen on validation
    #   (2.4e-2 was added while this revision ran, before its 4.8e11 and 6e10 budgets trained, because 1.2e-2 --
    #   then the top -- won at the smallest sizes of both arms at 1.2e11 and 2.4e11; nothing else changed);
    # - budgets: 6e10-4.8e11 (4 budgets over 0.9 decades: 2 residual dof for the slope). 3e10 is dropped: its
    #   runs of <= 150 steps stayed on the byte-frequency plateau (~3.05 nats) at every size but 1x16. Budgets
    #   above 4.8e11 do not fit this machine's hour (9.6e11 alone would take ~54 slot-minutes);
    # - seeds 0,1 everywhere, + seed 2 at the 3 middle sizes (where the optimum is expected); strict myopic at
    #   the middle budget 2.4e11.
    # Cells of the first run with the same budget, size, lr and seed are reused (identical runs, same names).
    # Estimated (before the run, with the 4-value grid) 180 new runs, ~69 slot-minutes at worst; the runs went
    # about twice as fast as that model (~7 ms/step for 1x16), which left room for the fifth lr.
    "cpu-isoflop": IsoFlopPreset(
        name="cpu-isoflop",
        description="2-core CPU IsoFLOP: budgets 6e10-4.8e11 FLOPs, 5 sizes each (~15-1000 tokens/param), vanilla "
        "+ myopic-hidden (+ strict myopic at 2.4e11), lr grid 1.5e-3..2.4e-2 on validation, seeds 0,1 (+2 at the "
        "3 middle sizes)",
        budgets=(6e10, 1.2e11, 2.4e11, 4.8e11),
        strict_budgets=(2.4e11,),
        n_sizes=5,
        ratio_range=(15.0, 1000.0),
        n_frontier=3,
        aspect=32,
        head_dim=32,
        seq_len=128,
        batch_size=16,
        lr_grid=(1.5e-3, 3e-3, 6e-3, 1.2e-2, 2.4e-2),
    ),
    # Documented, not run here. GPT-2-family shapes (aspect 64, head size 64) ~10M-350M non-embedding parameters,
    # 1024-token contexts, budgets 1e17..1e19 FLOPs (5 budgets, half-decade spacing), 5 sizes per budget.
    "gpu-isoflop": IsoFlopPreset(
        name="gpu-isoflop",
        description="GPU IsoFLOP (not run here): GPT-2-family 10M-350M, context 1024, budgets 1e17-1e19 FLOPs, "
        "5 sizes each, vanilla + myopic-hidden (+ strict myopic at 1e18), lr grid 3e-4/6e-4/1.2e-3, bf16",
        budgets=(1e17, 3.16e17, 1e18, 3.16e18, 1e19),
        strict_budgets=(1e18,),
        n_sizes=5,
        aspect=64,
        head_dim=64,
        seq_len=1024,
        batch_size=256,
        lr_grid=(3e-4, 6e-4, 1.2e-3),
        eval_tokens=4194304,
        precision="bf16",
        min_width=256,
        max_width=1536,
        estimate="sum over runs of budget x (3 lr + 1-2 more seeds) x arms = 5 sizes x (2 arms x 4.4 runs) x "
        "(1e17+3.2e17+1e18+3.2e18+1e19) + strict arm at 1e18 ~= 6.6e20 FLOPs; at 40% MFU of an H100 in bf16 "
        "(~4e14 FLOP/s) ~= 460 GPU-hours",
    ),
}
