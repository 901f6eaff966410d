"""A planted positive control for text: a lookahead dependency inserted into real documents.

The construction, fixed before any model is trained on it:

- A **record** ``<s1t1s2t2...swtw>a`` (``w`` = ``n_slots`` pairs of key characters between angle brackets, then one
  answer character) is inserted into a document right after a space, followed by a space, at random places
  (``rate`` records per 1000 characters of the original document, at least one per document).
- Every key is drawn uniformly from ``keys`` (K characters, K even), independently of everything before it, so
  nothing computed at a key's position helps predict the *next* key.
- A fixed **rule** (the same for every document, every split and every seed; set by ``table_seed``) maps a
  pair of keys to a bit: h(s, t) = [ρ((σ(s) + τ(t)) mod K) < K/2] for random permutations σ, τ, ρ of 0..K-1 (a
  Latin square cut in half). Every row and every column of h holds K/2 ones: either key of a pair alone says
  nothing about its bit. (``rule="order"``, added after vanilla failed to learn the Latin rule at every level tried:
  h(s, t) = [s > t], ties [s >= K/2], also half ones, learnable from each key's own correlation with the bit.)
- The answer is the number of pairs whose bit is 1: a = Σ_m h(s_m, t_m), written as the digit ``str(a)``. With
  probability ``1 - strength`` the answer is instead drawn from Binomial(w, 1/2), independently of the keys; that
  is the rule's own distribution of a (the keys are uniform and h is balanced), so the answer's marginal is the
  same at every strength and ``strength = 0`` is a placebo with no dependency at all.

Why this asks for pre-caching: the feature h(s_m, t_m) can be computed at t_m's position (s_m is one token back)
but is useless there (the next character is a fresh uniform key or the closing bracket); it is needed only at the
answer, w pairs later. Computing it at the answer instead means reading all 2w keys *with their pairing* in one
step; a sum over the keys' embeddings keeps which keys occurred but not which pairs (permuting keys changes the
answer), so a model with few heads must either pre-compute each pair's bit where the pair ends or fail. Vanilla
training rewards the pre-computation through the gradient from the answer back to the pair's position; myopic
training removes exactly that gradient. The answer token is where the planted gap lives; :func:`task_items`
writes the answers as a user task of the suite (``myopia tasks DIR --user FILE``).

Characters: digits as keys and answers, ``<``/``>`` as brackets. Texts that already contain a bracket are
refused, so every bracket marks a record (and digits inside brackets are always keys).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import MyopiaError

KEYS = "0123456789"
OPEN, CLOSE = "<", ">"  # absent from the Brown corpus (which has braces)


@dataclass(frozen=True)
class Record:
    """One inserted record: document index, character offset of the answer in the planted text, the key
    indices (2w,), the answer, the rule's answer, and whether this record follows the rule."""

    doc: int
    answer_offset: int
    keys: tuple
    answer: int
    rule_answer: int
    follows_rule: bool


RULES = ("latin", "order")


def rule_table(n_keys: int = len(KEYS), table_seed: int = 29, rule: str = "latin") -> np.ndarray:
    """h (K, K) of 0/1 with K²/2 ones. ``latin``: every row and column with K/2 ones (a random Latin square cut in
    half; parity-like, either key alone says nothing). ``order``: h(s, t) = [s > t], ties [s >= K/2] (each key alone
    is informative, the pair's bit still needs both; the gradient finds it much more easily)."""
    if n_keys < 2 or n_keys % 2:
        raise MyopiaError(f"the rule needs an even number of keys >= 2, got {n_keys}")
    if rule not in RULES:
        raise MyopiaError(f"rule must be one of {', '.join(RULES)}, got {rule!r}")
    if rule == "order":
        i = np.arange(n_keys)
        return ((i[:, None] > i[None, :]) | ((i[:, None] == i[None, :]) & (i[:, None] >= n_keys // 2))).astype(
            np.int64)
    rng = np.random.default_rng([table_seed, n_keys])
    sigma, tau, rho = (rng.permutation(n_keys) for _ in range(3))
    latin = (sigma[:, None] + tau[None, :]) % n_keys
    return (rho[latin] < n_keys // 2).astype(np.int64)


def rule_answer(keys, table: np.ndarray) -> int:
    """Σ_m h(s_m, t_m) over the pairs (keys[0], keys[1]), (keys[2], keys[3]), ... of key indices."""
    k = np.asarray(keys, dtype=np.int64).reshape(-1, 2)
    return int(table[k[:, 0], k[:, 1]].sum())


def _places(text: str, n: int, rng: np.random.Generator) -> list[int]:
    """``n`` distinct insertion offsets right after a space (or the text's start when it has none), ascending."""
    spaces = [i + 1 for i, c in enumerate(text) if c == " "] or [0]
    n = min(n, len(spaces))
    return sorted(int(x) for x in rng.choice(spaces, size=n, replace=False))


def plant(texts: list[str], *, strength: float, n_slots: int = 4, rate: float = 1.0, seed: int = 0,
          keys: str = KEYS, table_seed: int = 29, rule: str = "latin") -> tuple[list[str], list[Record]]:
    """(planted texts, records): records inserted into each text as the module describes.

    strength in [0, 1]: probability that a record's answer follows the rule; rate: records per 1000 characters of
    the original text (at least 1 per text); seed: placement, keys and placebo answers; table_seed and rule: the
    rule (:func:`rule_table`)."""
    if not 0.0 <= float(strength) <= 1.0:
        raise MyopiaError(f"strength must lie in [0, 1], got {strength!r}")
    if n_slots < 1 or n_slots > 9:
        raise MyopiaError(f"n_slots must be 1..9 (the answer is one digit), got {n_slots}")
    if rate <= 0:
        raise MyopiaError(f"rate must be positive, got {rate}")
    if len(set(keys)) != len(keys) or OPEN in keys or CLOSE in keys:
        raise MyopiaError("keys must be distinct characters other than the brackets")
    table = rule_table(len(keys), table_seed, rule)
    rng = np.random.default_rng([seed, 2929])
    out, records = [], []
    for d, text in enumerate(texts):
        if OPEN in text or CLOSE in text:
            raise MyopiaError(f"document {d} already contains {OPEN!r} or {CLOSE!r}; every one must mark a record")
        n = max(1, int(round(rate * len(text) / 1000)))
        pieces, last, shift = [], 0, 0
        for at in _places(text, n, rng):
            k = rng.integers(0, len(keys), size=2 * n_slots)
            rule = rule_answer(k, table)
            follows = bool(rng.random() < strength)
            answer = rule if follows else int(rng.binomial(n_slots, 0.5))
            body = OPEN + "".join(keys[i] for i in k) + CLOSE
            pieces += [text[last:at], body + str(answer) + " "]
            records.append(Record(d, at + shift + len(body), tuple(int(i) for i in k), answer, rule, follows))
            shift += len(body) + 2
            last = at
        pieces.append(text[last:])
        out.append("".join(pieces))
    return out, records


def unplant(text: str, n_slots: int = 4) -> str:
    """The original text: every record ``<...>a`` and the space after it removed."""
    out, i = [], 0
    while True:
        j = text.find(OPEN, i)
        if j < 0:
            return "".join(out) + text[i:]
        out.append(text[i:j])
        i = j + 2 * n_slots + 2 + 2  # brackets, keys, answer digit, space


def task_items(texts: list[str], records: list[Record], *, only_rule: bool = False, context_chars: int = 1024,
               docs=None) -> list[dict]:
    """User-task items of the answers: context = the last ``context_chars`` characters of the planted text up to
    the closing bracket (the task suite left-truncates a context to the model's window anyway), continuation =
    the answer digit; ``label`` "rule" or "placebo" (records whose answer was drawn at random). ``docs``: keep
    only records of these document indices (e.g. the held-out ones)."""
    keep = None if docs is None else set(int(d) for d in docs)
    items = []
    for r in records:
        if (only_rule and not r.follows_rule) or (keep is not None and r.doc not in keep):
            continue
        t = texts[r.doc]
        items.append({"id": f"d{r.doc}@{r.answer_offset}",
                      "context": t[max(0, r.answer_offset - context_chars):r.answer_offset],
                      "continuation": t[r.answer_offset], "label": "rule" if r.follows_rule else "placebo"})
    return items


def write_task_file(path, items: list[dict]) -> None:
    """The items as JSON Lines (one per line), written atomically."""
    from ..io import atomic_write_bytes

    if not items:
        raise MyopiaError("no planted records to write")
    atomic_write_bytes(Path(path), "".join(json.dumps(it) + "\n" for it in items).encode("utf-8"))


def plant_folder(source, out_dir, task_file, *, strength: float, task_docs=None, **kwargs) -> dict:
    """Plant records into every document of a text corpus (file or folder of ``.txt`` files, one slice per file)
    and write it as a folder corpus ``out_dir/<slice>.txt`` (documents separated by blank lines, in the source's
    order, so the same document split applies) plus the answers as a user task ``task_file`` (outside out_dir).

    ``task_docs``: document indices (source order) whose answers go into the task file (default all; pass the
    held-out ones). ``kwargs`` go to :func:`plant`. Returns a summary {documents, records, follows_rule, strength, settings}."""
    from ..data.sources import read_text_documents
    from ..io import atomic_write_bytes

    out_dir, task_file = Path(out_dir), Path(task_file)
    if task_file.resolve().is_relative_to(out_dir.resolve()):
        raise MyopiaError("the task file must lie outside the planted corpus folder (it would be read as text)")
    docs = read_text_documents(source)
    planted, records = plant([d.text for d in docs], strength=strength, **kwargs)
    by_slice: dict[str, list[str]] = {}
    for d, text in zip(docs, planted):
        by_slice.setdefault(d.slice or "planted", []).append(text)
    out_dir.mkdir(parents=True, exist_ok=True)
    for name, texts in by_slice.items():
        atomic_write_bytes(out_dir / f"{name}.txt", ("\n\n".join(texts) + "\n").encode("utf-8"))
    write_task_file(task_file, task_items(planted, records, docs=task_docs))
    return {"documents": len(docs), "records": len(records), "follows_rule": sum(r.follows_rule for r in records),
            "strength": float(strength), "settings": {k: v for k, v in kwargs.items()}}
