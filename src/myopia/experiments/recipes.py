"""Named recipes: the measured configurations, as the ``myopia`` command lines that reproduce them.

A recipe is a sequence of ``myopia`` commands with the placeholders ``{data}``, ``{data2}`` (a second corpus,
default: the first) and ``{out}``; ``myopia recipe NAME --data D --out O`` runs them in order, and the docs cite
the recipe's name instead of copying long command lines into prose. ``myopia recipe`` lists them. The
measurements predate document masks and multi-seed defaults, so the recipes say ``--no-document-mask`` and
``--seeds 0`` where the command has them.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..arms import PAIR_ARMS
from ..errors import MyopiaError

__all__ = ["Recipe", "RECIPES", "get_recipe"]


@dataclass(frozen=True)
class Recipe:
    """A named sequence of ``myopia`` command lines (argv lists with ``{data}``, ``{data2}``, ``{out}``)."""

    name: str
    description: str
    data: str  # what --data (and --data2) should be
    steps: tuple[tuple[str, ...], ...]

    def commands(self, data: str, out: str, data2: str | None = None) -> list[list[str]]:
        """The recipe's command lines (without the leading ``myopia``) for these inputs."""
        values = {"data": str(data), "data2": str(data2 if data2 is not None else data), "out": str(out)}
        return [[arg.format(**values) for arg in step] for step in self.steps]


def _split(text: str) -> tuple[str, ...]:
    return tuple(text.split())


_TRAIN_CHECK = "--steps 300 --d-model 128 --n-layer 4 --n-head 4 --seq-len 128 --batch-size 32 --lr 2e-3 --seed 0 " \
               "--eval-every 100 --no-document-mask"

RECIPES: dict[str, Recipe] = {r.name: r for r in (
    Recipe(
        name="train-check",
        description="every gradient setting learns: 4x128 GPT, context 128, 300 steps x 32 sequences, one seed",
        data="a text file (measured on tinyshakespeare)",
        steps=tuple(_split(f"train --data {{data}} --out {{out}}/{g} --gradient {g} {_TRAIN_CHECK}")
                    for g in PAIR_ARMS),
    ),
    Recipe(
        name="brown-gap",
        description="the natural-language chain: vanilla, myopic and myopic-hidden 4x128 GPTs (1200 steps x 32 x 128 "
        "bytes), then gap, bonus and report",
        data="a folder of text files, one per slice (measured on the Brown corpus, one file per genre)",
        steps=(_split("pair --data {data} --out {out} --test-frac 0.2 --seeds 0 --no-progress --n-layer 4 "
                      "--d-model 128 --n-head 4 --seq-len 128 --batch-size 32 --lr 2e-3 --steps 1200 --eval-every 200 "
                      "--no-document-mask"),
               _split("gap {out} --no-progress"),
               _split("bonus {out} --no-progress"),
               _split("report {out}")),
    ),
    Recipe(
        name="hf-chain",
        description="a small byte-level GPT pretrained on --data, exported to transformers, fine-tuned on --data2 "
        "with the Pythia protocol (three arms), its gradient split over snapshots, future-token probes",
        data="--data: the pretraining corpus (measured: Brown); --data2: the fine-tuning text (tinyshakespeare)",
        steps=(_split("train --data {data} --out {out}/base --gradient vanilla --d-model 128 --n-layer 4 "
                      "--n-head 4 --seq-len 128 --steps 200 --batch-size 16 --lr 2e-3 --eval-every 100 "
                      "--ckpt-every 100 --no-document-mask"),
               _split("export {out}/base --out {out}/base-hf"),
               _split("finetune --model {out}/base-hf --data {data2} --out {out}/ft --steps 150 --batch-size 16 "
                      "--seq-len 64 --lr 1e-3 --eval-every 50 --ckpt-every 50 --snapshot-every 50 "
                      "--eval-tokens 32768 --no-document-mask"),
               _split("grad {out}/base-hf {out}/ft/vanilla --snapshots --data {data2} --out {out}/grad --windows 16"),
               _split("probe --pair {out}/ft --data {data2} --out {out}/probe --windows 64 --seq-len 64 "
                      "--steps 200 --layers 2,4")),
    ),
    Recipe(
        name="sweep-cpu",
        description="the CPU scaling sweep: 1x32 .. 4x128, 0.5M and 1M tokens, three gradient settings, one seed; "
        "then the summary and report",
        data="a corpus folder or file (measured on the Brown corpus)",
        steps=(_split("sweep --data {data} --out {out} --preset cpu --design ladder --tokens 0.5M,1M --seeds 0 "
                      "--threads 1"),
               _split("report {out}")),
    ),
    Recipe(
        name="horizon-cpu",
        description="loss against the gradient horizon h = 0..32 and beta = 0.5 at 2x64, 2M tokens, both myopic "
        "variants, three seeds",
        data="a corpus folder or file (measured on the Brown corpus)",
        steps=(_split("horizon-sweep --data {data} --out {out} --preset cpu --sizes 2x64h2 --tokens 2M "
                      "--seeds 0,1,2 --horizons 0,1,2,4,8,16,32 --betas 0.5 --threads 1"),
               _split("report {out}")),
    ),
)}


def get_recipe(name: str) -> Recipe:
    """The recipe called ``name``; a clear error naming the known ones otherwise."""
    if name not in RECIPES:
        raise MyopiaError(f"no recipe {name!r}; known recipes: {', '.join(RECIPES)}")
    return RECIPES[name]
