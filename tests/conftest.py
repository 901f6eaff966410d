"""Fixtures shared by the test modules."""

import random

import pytest
import torch


@pytest.fixture(autouse=True, scope="session")
def one_thread():
    """Every test runs single-threaded torch: the models are tiny, two OpenMP threads thrash on a busy 2-core
    machine (10-30x slower), and in-process runs then compute like the OMP_NUM_THREADS=1 subprocesses."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def write_toy_corpus(path, seed: int = 0, n_docs: int = 120):
    """A text file of ``n_docs`` random 20-60-word documents over a 12-word vocabulary, blank-line separated."""
    rng = random.Random(seed)
    words = ["the", "cat", "sat", "on", "a", "mat", "and", "dog", "ran", "far", "away", "home"]
    docs = [" ".join(rng.choice(words) for _ in range(rng.randint(20, 60))) for _ in range(n_docs)]
    path.write_text("\n\n".join(docs) + "\n")
    return path


@pytest.fixture(scope="module")
def corpus_file(tmp_path_factory):
    return write_toy_corpus(tmp_path_factory.mktemp("corpus") / "toy.txt")
