"""Argument groups shared by several subcommands (model size, gradient setting, optimisation)."""

from __future__ import annotations

import argparse
import typing
from dataclasses import fields

from ..model import GPTConfig
from ..train import TrainConfig


# Which config fields each option group exposes; help, type, default and choices come from the dataclass fields.
MODEL_OPTIONS = ("d_model", "n_layer", "n_head", "seq_len", "mlp_ratio", "dropout", "attention_impl")
GRADIENT_OPTIONS = ("beta", "horizon")
TRAIN_OPTIONS = ("steps", "batch_size", "micro_batch_size", "lr", "min_lr_ratio", "warmup_steps", "warmup_frac",
                 "schedule", "decay_frac", "decay_shape", "adam_beta2", "mup_base_width", "weight_decay",
                 "grad_clip", "eval_every", "ckpt_every", "log_every", "seed", "device", "precision", "compile",
                 "compile_backend", "tensorboard", "progress", "document_mask")
SCALE_OUT_OPTIONS = ("shard", "activation_checkpointing", "async_checkpoint", "device_memory_gb")


def add_config_options(group, cls, names, **defaults) -> None:
    """One option per field ``names`` of the dataclass ``cls``: ``--field-name`` with the field's type, default
    (or ``defaults[name]``), ``metadata["help"]`` and ``metadata["choices"]``. A boolean field is a switch:
    ``--name`` when it defaults to False, ``--no-name`` (dest ``no_name``) when it defaults to True, both
    (``--name`` / ``--no-name``, dest ``name``) when its metadata says ``both_switches``."""
    hints = typing.get_type_hints(cls)
    by_name = {f.name: f for f in fields(cls)}
    for name in names:
        f = by_name[name]
        text = f.metadata.get("help", "").replace("%", "%%")  # argparse formats help with %
        with_default = text + " (default %(default)s)"
        default = defaults.get(name, f.default)
        flag = "--" + name.replace("_", "-")
        if hints[name] is not bool:
            group.add_argument(flag, type=hints[name], default=default, choices=f.metadata.get("choices"),
                               help=with_default)
        elif f.metadata.get("both_switches"):
            group.add_argument(flag, action=argparse.BooleanOptionalAction, default=default, help=with_default)
        elif default:
            group.add_argument("--no-" + name.replace("_", "-"), dest=f"no_{name}", action="store_true",
                               help=f"no {text}")
        else:
            group.add_argument(flag, action="store_true", help=text)


def config_from_args(cls, args, **fixed):
    """``cls`` built from the parsed options that name its fields (``no_<name>`` switches negated); fields the
    command has no option for keep their defaults, and ``fixed`` overrides both."""
    values = {}
    for f in fields(cls):
        if hasattr(args, f.name):
            values[f.name] = getattr(args, f.name)
        elif hasattr(args, f"no_{f.name}"):
            values[f.name] = not getattr(args, f"no_{f.name}")
    return cls(**{**values, **fixed})


def add_model_args(p: argparse.ArgumentParser, **defaults) -> None:
    """The model-size options (:data:`MODEL_OPTIONS` of :class:`GPTConfig`); ``defaults`` override the config's."""
    add_config_options(p.add_argument_group("model"), GPTConfig, MODEL_OPTIONS, **defaults)


def add_gradient_args(p: argparse.ArgumentParser, *, default="vanilla", single=True) -> None:
    """``--gradient`` (when ``single``), ``--beta`` and ``--horizon`` of :class:`GPTConfig`."""
    g = p.add_argument_group("gradient")
    add_config_options(g, GPTConfig, (("gradient",) if single else ()) + GRADIENT_OPTIONS, gradient=default)


def add_train_args(p: argparse.ArgumentParser, **defaults) -> None:
    """The training options (:data:`TRAIN_OPTIONS` of :class:`TrainConfig`) and the scale-out options
    (:data:`SCALE_OUT_OPTIONS`); ``defaults`` override the config's (e.g. ``steps=1500, batch_size=128, lr=3e-3``)."""
    add_config_options(p.add_argument_group("training"), TrainConfig, TRAIN_OPTIONS, **defaults)
    add_config_options(p.add_argument_group("scale-out (under torchrun; see docs/multi-gpu.md)"), TrainConfig,
                       SCALE_OUT_OPTIONS, **defaults)


def model_config(args, vocab_size: int = 256, gradient: str | None = None) -> GPTConfig:
    """The :class:`GPTConfig` of the parsed model and gradient options."""
    fixed = {"vocab_size": vocab_size}
    if gradient is not None:
        fixed["gradient"] = gradient
    return config_from_args(GPTConfig, args, **fixed)


def train_config(args) -> TrainConfig:
    """The :class:`TrainConfig` of the parsed training options."""
    return config_from_args(TrainConfig, args)


def add_data_args(p: argparse.ArgumentParser, *, required: bool = True) -> None:
    """--data and how to read and tokenize it (see myopia.data.sources / myopia.data.tokenizer)."""
    g = p.add_argument_group("data")
    g.add_argument("--data", required=required,
                   help="text file, folder (file stem = slice), .jsonl/.parquet, a datasets save_to_disk folder, "
                   "hf:NAME, or a token cache folder")
    g.add_argument("--tokenizer", default=None,
                   help="bytes (default), bpe:N (train a byte-level BPE), a tokenizer.json, hf:NAME or a folder")
    g.add_argument("--text-field", default="text", help="text field of JSON/Parquet/datasets records")
    g.add_argument("--label-field", default=None, help="record field used as the slice label")
    g.add_argument("--hf-config", default=None, help="Hugging Face dataset configuration")
    g.add_argument("--hf-split", default=None, help="Hugging Face dataset split(s) to read (default: all)")
    g.add_argument("--val-frac", type=float, default=0.05, help="fraction of documents held out for validation")
    g.add_argument("--test-frac", type=float, default=0.05, help="fraction of documents held out for testing")
    g.add_argument("--split-seed", type=int, default=0, help="seed of the document-level split")


def data_options(args) -> dict:
    """Keyword arguments of myopia.data.load_corpus from add_data_args' flags (tokenizer and cache excluded)."""
    return {"text_field": args.text_field, "label_field": args.label_field, "hf_config": args.hf_config,
            "hf_split": args.hf_split, "val_frac": args.val_frac, "test_frac": args.test_frac,
            "split_seed": args.split_seed}
