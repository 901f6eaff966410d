"""The names of the files in a run folder and of the summaries in folders of several runs: one spelling each.

This module imports nothing, so that every other one — the checkpointer included — can use the names without an
import circle; :mod:`myopia.rundir` re-exports them beside the functions that read run folders.
"""

CONFIG = "config.json"
METRICS = "metrics.jsonl"
RESULT = "result.json"
MODEL = "model.safetensors"
CHECKPOINTS = "checkpoints"  # one distributed-checkpoint folder per checkpointed step
CHECKPOINT = "checkpoint.safetensors"  # the single-file checkpoint of myopia < 0.2.0 (such folders are refused)
PREVIOUS_CHECKPOINT = "checkpoint.prev.safetensors"  # myopia.checkpoint.previous_path(CHECKPOINT)
LOCK = ".lock"
SNAPSHOTS = "snapshots"
TOKENIZER = "tokenizer"
# The summaries of the folders that hold several runs (what `myopia report DIR` looks for).
PAIR_JSON = "pair.json"  # myopia pair: the arms, seeds and run folders
GAP_JSON = "gap.json"  # myopia gap
BONUS_JSON = "bonus.json"  # myopia bonus
SWEEP_JSON = "sweep.json"  # myopia sweep
HORIZON_JSON = "horizon.json"  # myopia horizon-sweep

__all__ = ["CONFIG", "METRICS", "RESULT", "MODEL", "CHECKPOINTS", "CHECKPOINT", "PREVIOUS_CHECKPOINT", "LOCK",
           "SNAPSHOTS", "TOKENIZER", "PAIR_JSON", "GAP_JSON", "BONUS_JSON", "SWEEP_JSON", "HORIZON_JSON"]
