"""The lm-evaluation-harness route: a real offline harness run of a local YAML task over tiny exported runs."""

import json
import random
import sys

import numpy as np
import pytest
import torch

from myopia.cli import main
from myopia.errors import MyopiaError
from myopia.experiments.harness import gold_loglikelihood, import_lm_eval, run_harness
from myopia.experiments.pair import run_pair
from myopia.io import read_json
from myopia.model import GPTConfig
from myopia.pairdir import PairDir
from myopia.rundir import load_run_model
from myopia.train import TrainConfig

WORDS = "the cat sat on a mat and dog ran far away home".split()


def test_without_lm_eval_the_command_says_how_to_install_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "lm_eval", None)  # import lm_eval now raises ImportError
    with pytest.raises(MyopiaError, match=r'pip install -e "\.\[eval\]"'):
        import_lm_eval()


def test_gold_loglikelihood_of_each_request_type():
    assert gold_loglikelihood({"filtered_resps": [(-1.0, False), (-2.0, True)], "target": 1}) == -2.0
    assert gold_loglikelihood({"filtered_resps": [(-3.5, True)], "target": "x"}) is None  # no gold index
    assert gold_loglikelihood({"filtered_resps": (-3.5, True)}) == -3.5
    assert gold_loglikelihood({"filtered_resps": [-7.0]}) == -7.0
    assert gold_loglikelihood({"filtered_resps": ["some generated text"]}) is None


@pytest.fixture(scope="module")
def harness_setup(tmp_path_factory):
    pytest.importorskip("lm_eval", reason='lm-evaluation-harness not installed (pip install -e ".[eval]")')
    root = tmp_path_factory.mktemp("harness")
    data = root / "data"
    data.mkdir()
    rng = random.Random(0)
    docs = [" ".join(rng.choice(WORDS) for _ in range(rng.randint(15, 40))) for _ in range(30)]
    (data / "toy.txt").write_text("\n\n".join(docs) + "\n")
    pair = root / "pair"
    run_pair(data, pair, GPTConfig(vocab_size=257, n_layer=1, n_head=2, d_model=16, seq_len=32),
             TrainConfig(steps=3, batch_size=4, lr=1e-2, eval_every=3, ckpt_every=3, log_every=1, progress=False),
             arms="myopic-hidden", seeds="0,1", eval_tokens=256, data_opts={"val_frac": 0.2, "test_frac": 0.2},
             progress=False)
    tasks = root / "tasks"
    tasks.mkdir()
    items = []
    for i in range(10):
        choices = rng.sample(WORDS, 3)
        gold = rng.randrange(3)
        items.append({"context": f"the {choices[gold]} and the", "choices": choices, "gold": gold})
    (tasks / "toy.jsonl").write_text("".join(json.dumps(it) + "\n" for it in items))
    (tasks / "toy_repeat.yaml").write_text(f"""task: toy_repeat
dataset_path: json
dataset_kwargs:
  data_files:
    test: {tasks / 'toy.jsonl'}
test_split: test
output_type: multiple_choice
doc_to_text: "{{{{context}}}}"
doc_to_choice: "{{{{choices}}}}"
doc_to_target: "{{{{gold}}}}"
metric_list:
  - metric: acc
    aggregation: mean
    higher_is_better: true
""")
    return pair, tasks, items


@pytest.fixture
def offline(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "datasets-cache"))


def our_loglikelihood(model, context: str, continuation: str) -> float:
    """log p(continuation | context) under our GPT, bytes, no start token (what lm-eval's hf model computes)."""
    ctx, cont = list(context.encode()), list(continuation.encode())
    x = torch.tensor([ctx + cont[:-1]])
    with torch.no_grad():
        lp = torch.log_softmax(model(x).double(), -1)[0]
    return float(sum(lp[len(ctx) - 1 + i, t] for i, t in enumerate(cont)))


@pytest.mark.slow
def test_harness_end_to_end_pairs_per_document_gaps(harness_setup, offline):
    pair, tasks, items = harness_setup
    r = run_harness(pair, tasks="toy_repeat", include_path=tasks, n_boot=200, batch_size=4, progress=False)
    saved = read_json(pair / "harness.json")
    assert saved["harness_version"] == r["harness"]["version"] and saved["harness_version"].startswith("0.")
    t = saved["tasks"]["toy_repeat"]
    assert t["n"] == len(items) and set(t["gap"]["myopic-hidden"]) == {"acc", "loglikelihood"}
    for metric in ("acc", "loglikelihood"):
        g = t["gap"]["myopic-hidden"][metric]
        assert {"mean", "ci95", "p_holm"} <= set(g) and g["n_seeds"] == 2 and g["n_units"] == len(items)
    # the harness's log-likelihoods (through the exported GPT-NeoX models) are our own GPT's, document by document
    ll = {a: np.array([[our_loglikelihood(load_run_model(PairDir(pair).run(a, s)), it["context"],
                                          " " + it["choices"][it["gold"]]) for it in items] for s in (0, 1)])
          for a in ("vanilla", "myopic-hidden")}
    want = (ll["myopic-hidden"] - ll["vanilla"]).mean()
    assert t["gap"]["myopic-hidden"]["loglikelihood"]["mean"] == pytest.approx(want, abs=1e-4)
    assert t["metrics"]["loglikelihood"]["baseline"]["mean"] == pytest.approx(ll["vanilla"].mean(), abs=1e-4)
    assert (pair / "harness" / "models" / "myopic-hidden" / "seed1" / "config.json").is_file()
    assert t["metrics"]["acc"]["higher_is_better"] is True and t["metrics"]["loglikelihood"]["higher_is_better"]


def test_a_finetune_folder_gives_its_arms_vanilla_first(tmp_path):
    """`myopia harness DIR` on a `myopia finetune` folder: its arms (one run folder each, one seed)."""
    from myopia.experiments.harness import harness_arms

    for arm in ("myopic", "vanilla"):
        (tmp_path / arm).mkdir()
    (tmp_path / "finetune.json").write_text(json.dumps({"arms": {"myopic": {}, "vanilla": {}}}))
    arms, paths, base = harness_arms(tmp_path)
    assert arms == ["vanilla", "myopic"] and base == "vanilla" and paths["myopic"] == [tmp_path / "myopic"]


def test_unknown_harness_task_is_one_error_line_and_writes_nothing(harness_setup, offline, tmp_path, capsys):
    pair, tasks, _ = harness_setup
    out = tmp_path / "o"
    code = main(["harness", str(pair), "--tasks", "toy_repeat,no_such_task", "--include-path", str(tasks),
                 "--out", str(out), "--no-progress"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and err[-1].startswith("error:") and "no_such_task" in err[-1]
    assert not out.exists()
