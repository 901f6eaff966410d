"""The pair folder: one owner for what ``myopia pair`` writes and every later step (gap, bonus, tasks, harness,
report) reads.

A pair directory holds

    pair.json                      the manifest: arms, seeds, model/train config, data, run folders
    corpus/                        the token cache every arm trained on (unless the data was a cache elsewhere)
    runs/<arm>/seed<s>/            one trainer run per arm and seed (see :mod:`myopia.rundir`)
    gap.json, gap/per_token.npz    ``myopia gap``: the summary and the per-token scores
    bonus.json, bonus/...          ``myopia bonus``: the trainees, their controls and their scores

:class:`PairDir` names those paths once and answers the questions every step asks of them: which arms are
trained for which seeds, which corpus (and which of its documents) the arms trained on, which corpus a step
evaluates on and whether its held-out documents overlap the training documents, how held-out tokens are scored,
and the stored per-token score arrays. Checks of "the corpus, its split and each arm's training data" belong
here, so that every step runs the same one.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from .errors import MyopiaError
from .io import atomic_write_bytes, read_json, write_json
from .rundir import CONFIG, MODEL, run_status
from .runfiles import PAIR_JSON

if TYPE_CHECKING:  # importing this module does not import torch
    from .analysis.heldout import HeldOut
    from .data.corpus import TokenCorpus

MANIFEST = PAIR_JSON
GAP_ARRAYS = Path("gap") / "per_token.npz"  # myopia gap's per-token scores
BONUS_ARRAYS = Path("bonus") / "per_token.npz"  # myopia bonus's per-token scores
BONUS = "bonus"  # the folder of the bonus trainees and their controls

__all__ = ["PairDir", "MANIFEST", "GAP_ARRAYS", "BONUS_ARRAYS", "BONUS"]


class PairDir:
    """The pair folder at ``path``: its manifest, run folders, corpus and stored scores.

    Nothing is read on construction; :attr:`manifest` is read (once) when first asked for, with a clear error
    when ``path`` holds no ``pair.json``.
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._manifest: dict | None = None
        self._corpus = None

    def __repr__(self) -> str:
        return f"PairDir({str(self.path)!r})"

    # --- the manifest ----------------------------------------------------------------------------------------

    def exists(self) -> bool:
        """Whether the folder holds a manifest (``pair.json``)."""
        return (self.path / MANIFEST).is_file()

    @property
    def manifest(self) -> dict:
        """The pair's ``pair.json``; a clear error when the folder is not a pair directory."""
        if self._manifest is None:
            if not self.exists():
                raise MyopiaError(f"{self.path} is not a pair directory (no {MANIFEST}); create one with myopia pair")
            self._manifest = read_json(self.path / MANIFEST)
        return self._manifest

    def write_manifest(self, manifest: dict) -> None:
        """Write ``pair.json`` (atomically) and keep it as this folder's manifest."""
        write_json(self.path / MANIFEST, manifest)
        self._manifest = manifest

    @property
    def seq_len(self) -> int:
        """The context length every arm trained with (tokens)."""
        return int(self.manifest["model"]["seq_len"])

    # --- the runs ----------------------------------------------------------------------------------------------

    def run(self, arm: str, seed: int) -> Path:
        """The run folder of one arm and seed: DIR/runs/ARM/seedS."""
        return self.path / "runs" / arm / f"seed{seed}"

    def run_status(self, arm: str, seed: int) -> str:
        """``done``, ``partial`` or ``new`` (:func:`myopia.rundir.run_status`) of one arm and seed."""
        return run_status(self.run(arm, seed))

    def finished(self, arm: str, seed: int) -> bool:
        """Whether the arm's run of ``seed`` holds its final weights."""
        return (self.run(arm, seed) / MODEL).is_file()

    def trained_arms(self) -> tuple[list[str], list[int], list[str]]:
        """(arms finished for every seed that has vanilla, those seeds, arms skipped); an error without any
        finished vanilla run."""
        names = [a["name"] for a in self.manifest["arms"]]
        seeds = [s for s in self.manifest["seeds"] if self.finished("vanilla", s)]
        if not seeds:
            raise MyopiaError(f"{self.path}: no finished vanilla run; train the pair first (myopia pair)")
        arms = [a for a in names if all(self.finished(a, s) for s in seeds)]
        return arms, seeds, [a for a in names if a not in arms]

    def run_paths(self, arms: list[str], seeds: list[int]) -> dict[str, list[Path]]:
        """{arm: [run folder of each seed]}."""
        return {a: [self.run(a, s) for s in seeds] for a in arms}

    def bonus_run(self, trainee: str, seed: int) -> Path:
        """The run folder of a bonus trainee or control (``local``, ``continued``, ...) and seed."""
        return self.path / BONUS / trainee / f"seed{seed}"

    # --- the corpus and its split ------------------------------------------------------------------------------

    @property
    def cache_dir(self) -> Path:
        """The token cache every arm trained on (a relative path in pair.json is relative to the pair folder)."""
        p = Path(self.manifest["data"]["cache"])
        return p if p.is_absolute() else self.path / p

    def corpus(self) -> "TokenCorpus":
        """The pair's own corpus (its token cache, with the train/val/test split the arms trained on)."""
        if self._corpus is None:
            from .data.cache import open_cache

            self._corpus = open_cache(self.cache_dir)
        return self._corpus

    def eval_corpus(self, data=None) -> tuple["TokenCorpus", "TokenCorpus"]:
        """(corpus to evaluate on, the pair's own corpus): ``data`` is tokenized with the pair's tokenizer.

        Data with the source fingerprint, split settings (and tokenizer) of the pair's own corpus *is* the pair's
        corpus (the same object is returned twice).
        """
        from .data import load_corpus
        from .data.cache import is_cache, open_cache
        from .data.sources import DataSource

        own = self.corpus()
        if data is None:
            return own, own
        split = own.info.get("split") or {}
        if not str(data).startswith("hf:") and is_cache(data):
            other = open_cache(data)
            same = (other.info.get("source_fingerprint") == own.info.get("source_fingerprint")
                    and other.tokenizer.fingerprint() == own.tokenizer.fingerprint())
        else:
            same = DataSource.from_spec(data).fingerprint() == own.info.get("source_fingerprint")
            other = None if same else load_corpus(data, own.tokenizer, **split)
        if same and (other is None or other.info.get("split") == split):
            return own, own
        return other, own

    def held_out(self, corpus, split: str, max_docs=None) -> "HeldOut":
        """The held-out documents of ``corpus`` (from :meth:`eval_corpus`) in windows of the pair's context:
        ``split`` test or val, or ``all`` (every document of a foreign corpus, never of the pair's own); the
        training split is refused."""
        from .analysis.heldout import document_windows

        if split == "all":
            if corpus is self.corpus():
                raise MyopiaError("--split all would evaluate on training documents; use it only with --data OTHER")
            corpus.doc_split = np.full(corpus.n_docs, 2, dtype=np.int8)  # every document of a foreign corpus
            split = "test"
        if split == "train":
            raise MyopiaError("the gap is measured on held-out documents: use --split test or val")
        return document_windows(corpus, split, self.seq_len, max_docs=max_docs)

    def check_overlap(self, corpus, docs, *, what: str, drop: bool = False) -> tuple[np.ndarray, dict]:
        """The scored documents ``docs`` (ids into ``corpus``, e.g. a :class:`HeldOut`'s ``doc``) against the
        training split every arm of the pair trained on: exact duplicates (normalised whitespace and case) and
        near-duplicates by word 13-gram overlap (:func:`myopia.data.overlap.check_corpus_overlap`, threshold fixed
        there). Returns ``(kept document ids, summary for the result file)``; refuses in one line naming the
        counts unless ``drop`` (then the overlapping ones are left out and counted). Every step that evaluates a
        pair (gap, bonus, tasks) checks its data here, on the pair's own held-out split as on foreign data."""
        from .data.overlap import check_corpus_overlap

        kept, summary = check_corpus_overlap(corpus, np.unique(docs), {"every arm": self.corpus()}, drop=drop,
                                             what=what)
        summary["data"] = "pair corpus" if corpus is self.corpus() else "other corpus"
        return kept, summary

    def keep_documents(self, corpus, split: str, kept, max_docs=None) -> "HeldOut":
        """:meth:`held_out` of ``split`` with only the documents ``kept`` (the rest leave every split in memory)."""
        from .data.overlap import EXCLUDED

        held = np.asarray(corpus.split_docs("test" if split == "all" else split))
        corpus.doc_split = np.asarray(corpus.doc_split, dtype=np.int8).copy()
        corpus.doc_split[np.setdiff1d(held, kept)] = EXCLUDED
        return self.held_out(corpus, "test" if split == "all" else split, max_docs)

    def check_same_data(self, arms: list[str], seeds: list[int]) -> str | None:
        """Refuse (one line naming both runs) arms or seeds whose runs trained on different data (content
        fingerprint of the training split); returns the common fingerprint."""
        from .rundir import check_same_data

        return check_same_data({f"{a}/seed{s}": self.run(a, s) for a in arms for s in seeds})

    def induction_value(self, seeds: list[int]) -> dict | None:
        """Vanilla's value of context on the ``induction`` task from ``tasks.json`` (``myopia tasks``), when it was
        scored on these seeds with vanilla as the baseline; else None."""
        path = self.path / "tasks.json"
        if not path.is_file():
            return None
        t = read_json(path)
        if t.get("baseline") != "vanilla" or t.get("config", {}).get("seeds") not in (None, list(seeds)):
            return None
        return (t.get("tasks", {}).get("induction") or {}).get("value_of_context")

    # --- scoring -----------------------------------------------------------------------------------------------

    def scoring_context(self, arms: list[str], seeds: list[int]) -> dict:
        """How held-out tokens are scored, and whether each arm trained with document masks (runs saved before
        ``document_mask`` existed trained without)."""
        masked = {a: all(read_json(self.run(a, s) / CONFIG).get("train", {}).get("document_mask", False)
                         for s in seeds) for a in arms}
        note = ("each held-out document is scored on its own ([eos] + document, windows of seq_len): exactly the "
                "attention of document-masked training")
        if not all(masked.values()):
            unmasked = ", ".join(a for a in arms if not masked[a])
            note += (f"; trained without document masks (attending across document boundaries): {unmasked}, "
                     "whose training context differed from this scoring context at document starts")
        return {"document_mask": masked, "note": note}

    # --- stored per-token scores -------------------------------------------------------------------------------

    def save_arrays(self, name: str | Path, arrays: dict[str, np.ndarray]) -> None:
        """Write ``arrays`` as the npz file ``DIR/name`` (atomically)."""
        buf = io.BytesIO()
        np.savez(buf, **arrays)
        atomic_write_bytes(self.path / name, buf.getvalue())

    def load_arrays(self, name: str | Path, keys: list[str] | None = None) -> dict[str, np.ndarray]:
        """The arrays (only ``keys``, if given) of the npz file ``DIR/name``; an error naming ``myopia gap`` when it
        does not exist."""
        path = self.path / name
        if not path.is_file():
            raise MyopiaError(f"{path} does not exist; run myopia gap first")
        with np.load(path) as z:
            return {k: z[k] for k in (z.files if keys is None else keys)}

    def gap_scores(self, held: "HeldOut", seeds: list[int], arms: list[str], *,
                   with_kl: bool = False) -> dict[str, np.ndarray] | None:
        """The arrays of ``gap/per_token.npz`` when they score exactly the tokens of ``held`` with ``seeds`` and hold
        ``loss.<arm>`` (and, ``with_kl``, ``kl.<arm>`` but vanilla's) for every arm; None when there are none or
        they score something else."""
        if not (self.path / GAP_ARRAYS).is_file():
            return None
        a = self.load_arrays(GAP_ARRAYS)
        same = (a["seeds"].tolist() == list(seeds) and len(a["doc"]) == held.n_tokens
                and all(np.array_equal(a[k], getattr(held, k)) for k in ("doc", "position", "target"))
                and all(f"loss.{arm}" in a for arm in arms)
                and (not with_kl or all(f"kl.{arm}" in a for arm in arms if arm != "vanilla")))
        return a if same else None
