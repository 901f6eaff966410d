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
        default = defaults.get(name, f.default)
        with_default = text + (" (default %(default)s)" if default is not None else
                               f" (default: {f.metadata.get('unset', 'unset')})")
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
    add_config_options(p.add_argument_group("training"), TrainConfig, TRAIN_OPTIONS,
                       **{"eval_every": None, **defaults})  # None: about ten evaluations (TrainConfig resolves it)
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


def add_data_args(p: argparse.ArgumentParser, *, required: bool = True, tokenizer_help: str | None = None) -> None:
    """--data and how to read, split and tokenize it (see myopia.data.sources / text / tokenizer); the same options
    on every command that reads text."""
    from ..data.text import DEFAULT_DOCUMENTS, DOCUMENT_MODES

    g = p.add_argument_group("data")
    g.add_argument("--data", required=required,
                   help="text file, folder (file stem = slice), .jsonl/.parquet, a datasets save_to_disk folder, "
                   "hf:NAME, a token cache folder, or .npy token ids")
    g.add_argument("--documents", default=DEFAULT_DOCUMENTS, choices=DOCUMENT_MODES,
                   help="how a plain-text file becomes documents: blank-lines (blocks between blank lines), file "
                   "(each file one text, cut into ~8k-character segments for the split), stream (a folder's files "
                   "as one continuous text); records of JSONL/Parquet/datasets are documents anyway "
                   "(default %(default)s)")
    g.add_argument("--tokenizer", default=None,
                   help=tokenizer_help or "bytes (default), bpe:N (train a byte-level BPE on the training "
                   "documents), a tokenizer.json, hf:NAME or a folder")
    g.add_argument("--text-field", default="text", help="text field of JSON/Parquet/datasets records "
                   "(default %(default)s)")
    g.add_argument("--label-field", default=None, help="record field used as the slice label (default: the file "
                   "stem)")
    g.add_argument("--hf-config", default=None, help="Hugging Face dataset configuration (default: none)")
    g.add_argument("--hf-split", default=None, help="Hugging Face dataset split(s) to read (default: all)")
    g.add_argument("--val-frac", type=float, default=0.05, help="fraction of documents held out for validation "
                   "(default %(default)s)")
    g.add_argument("--test-frac", type=float, default=0.05, help="fraction of documents held out for testing "
                   "(default %(default)s)")
    g.add_argument("--split-seed", type=int, default=0, help="seed of the document-level split (default %(default)s)")


def data_options(args) -> dict:
    """Keyword arguments of myopia.data.load_corpus from add_data_args' flags (tokenizer and cache excluded): how
    to read and split, and a line on stderr saying what was read (not with --no-progress) and a warning when
    documents are shorter than the command's --seq-len (always)."""
    return {"text_field": args.text_field, "label_field": args.label_field, "hf_config": args.hf_config,
            "hf_split": args.hf_split, "val_frac": args.val_frac, "test_frac": args.test_frac,
            "split_seed": args.split_seed, "documents": args.documents,
            "announce": not getattr(args, "no_progress", False), "context_len": getattr(args, "seq_len", None)}


def given_options(argv: list[str]) -> set[str]:
    """The destinations of the options typed in ``argv`` (a whole ``myopia`` command line), defaults left out:
    what a command that fills the rest from a saved run must not override."""
    from . import build_parser

    parser = build_parser()
    _suppress_defaults(parser)
    return set(vars(parser.parse_args(argv))) - {"func", "command"}


def _suppress_defaults(parser: argparse.ArgumentParser) -> None:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in action.choices.values():
                _suppress_defaults(child)
        elif not isinstance(action, argparse._HelpAction):
            action.default = argparse.SUPPRESS
            action.required = False
    parser.set_defaults(**{k: argparse.SUPPRESS for k in parser._defaults})


def fill_from_saved_run(args, saved: dict, model_fields, train_fields) -> list[str]:
    """Set every option of a ``--resume`` that was not typed to the saved run's value (``config.json``'s ``run``
    and ``train``); returns the names filled. Typed options stay, and the resume check then refuses any that
    differ from the saved run (naming the field)."""
    typed = given_options(args.argv) if getattr(args, "argv", None) is not None else set()
    run, train = saved.get("run", {}), saved.get("train", {})
    values = {"data": run.get("data"), "eval_tokens": run.get("eval_tokens"),
              **{k: run.get("model", {}).get(k) for k in model_fields},
              **{k: train.get(k) for k in train_fields}, **run.get("data_options", {})}
    filled = []
    for name, value in values.items():
        if value is None or name in typed:
            continue
        if hasattr(args, name):
            setattr(args, name, value)
        elif hasattr(args, f"no_{name}") and isinstance(value, bool):
            setattr(args, f"no_{name}", not value)
        else:
            continue
        filled.append(name)
    return filled
