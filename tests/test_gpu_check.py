"""The GPU check's dry run: every section at toy size on the CPU, the JSON complete after the run (~35 s)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_gpu_check_dry_run_runs_every_section(tmp_path):
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT / "src"))
    env.pop("RANK", None), env.pop("WORLD_SIZE", None)
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu_check.py"), "--dry-run", "--out",
                           str(tmp_path)], env=env, capture_output=True, text=True, timeout=600)
    report = json.loads((tmp_path / "gpu_check.json").read_text())
    sections = report["sections"]
    assert list(sections) == ["environment", "kernel_exactness", "model_exactness", "attention_speed", "gpt_step",
                              "pythia_1b", "torchrun", "finetune"]
    for name, res in sections.items():
        assert "error" not in res, f"{name}: {res.get('error')}\n{res.get('traceback', '')}"
        assert not res["budget_cut"], f"{name} ran out of its budget: {res['budget_cut']}"
    # thresholded sections pass at toy size; timing sections only report on the CPU
    for name in ("kernel_exactness", "model_exactness", "torchrun", "finetune"):
        assert sections[name]["pass"] is True, (name, proc.stdout[-3000:])
    assert sections["kernel_exactness"]["n_cases"] >= 45
    assert {r["path"] for r in sections["kernel_exactness"]["pinned_paths"]} == {"band", "near", "complement"}
    assert sections["gpt_step"]["compiled"]["myopic"]["graph_breaks"] == 0
    assert sections["torchrun"]["backend"] == "gloo" and sections["torchrun"]["resumed_from_step"] > 0
    assert proc.returncode == 0 and report["pass"] is True, proc.stdout[-3000:]
