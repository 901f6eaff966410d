"""Train under torchrun, SIGKILL the launcher mid-run, resume, and compare with an uninterrupted run.

The check the GPU check runs on one GPU (NCCL, ``--shard full``); on a CPU machine it runs with gloo:

    python benchmarks/torchrun_kill_resume.py --data CORPUS --out /tmp/krun --nproc 1 --shard full --device cuda
    python benchmarks/torchrun_kill_resume.py --data CORPUS --out /tmp/krun --nproc 2 --shard full --device cpu

Steps: (1) ``torchrun --standalone --nproc_per_node=N -m myopia train ... --shard S`` uninterrupted into OUT/full;
(2) the same into OUT/cut, SIGKILL to the torchrun launcher once a checkpoint past step ``--kill-after`` exists;
(3) check that every worker died with the launcher and the run directory's lock is free; (4) the same command
with ``--resume``; (5) compare final losses and weights with (1). Prints one JSON line (also ``--json``) and exits
1 if a check fails.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", required=True)
    ap.add_argument("--out", required=True, help="scratch folder (replaced)")
    ap.add_argument("--nproc", type=int, default=1)
    ap.add_argument("--shard", default="full", choices=["none", "grad", "full"])
    ap.add_argument("--device", default="auto")
    ap.add_argument("--precision", default="auto")
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--ckpt-every", type=int, default=10)
    ap.add_argument("--kill-after", type=int, default=20, help="kill once a checkpoint of at least this step exists")
    ap.add_argument("--model", default="--d-model 128 --n-layer 4 --n-head 4 --seq-len 128 --batch-size 16",
                    help="model and batch flags of myopia train")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()

    import torch

    from myopia.checkpoint import RunLock, checkpoint_steps, load_model_state
    from myopia.errors import MyopiaError
    from myopia.io import read_jsonl

    out = Path(args.out)
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"))
    for var in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(var, None)

    def command(run: Path, *extra: str) -> list[str]:
        return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={args.nproc}",
                "-m", "myopia", "train", "--data", args.data, "--out", str(run), "--steps", str(args.steps),
                "--ckpt-every", str(args.ckpt_every), "--eval-every", str(args.ckpt_every), "--log-every", "1",
                "--shard", args.shard, "--device", args.device, "--precision", args.precision, "--no-progress",
                *args.model.split(), *extra]

    report: dict = {"nproc": args.nproc, "shard": args.shard, "device": args.device, "checks": {}}
    t0 = time.perf_counter()
    full = subprocess.run(command(out / "full"), env=env, capture_output=True, text=True)
    report["full_rc"], report["full_s"] = full.returncode, time.perf_counter() - t0
    report["checks"]["uninterrupted run exits 0"] = full.returncode == 0

    launcher = subprocess.Popen(command(out / "cut"), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    workers: list[int] = []
    deadline = time.time() + 1800
    while time.time() < deadline and launcher.poll() is None:
        try:
            workers = [int(p) for p in Path(f"/proc/{launcher.pid}/task/{launcher.pid}/children").read_text().split()] or workers
        except OSError:
            pass
        done = [s for s, p in checkpoint_steps(out / "cut") if (p / "meta.json").exists()]
        if done and max(done) >= args.kill_after:
            break
        time.sleep(0.05)
    killed = launcher.poll() is None
    report["checks"]["killed mid-run"] = killed
    if killed:
        os.kill(launcher.pid, signal.SIGKILL)
    launcher.wait()

    def alive(pid: int) -> bool:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[-1].split()[0]
        except OSError:
            return False
        return state != "Z"

    deadline = time.time() + 60
    while time.time() < deadline and any(alive(w) for w in workers):
        time.sleep(0.1)
    report["workers"] = workers
    report["checks"]["workers died with the launcher"] = bool(workers) and not any(alive(w) for w in workers)
    lock_free = False
    while time.time() < deadline:
        try:
            RunLock(out / "cut").acquire().release()
            lock_free = True
            break
        except MyopiaError:
            time.sleep(0.1)
    report["checks"]["lock released"] = lock_free
    for w in workers:
        if alive(w):
            os.kill(w, signal.SIGKILL)
    report["killed_at_checkpoint"] = max((s for s, _ in checkpoint_steps(out / "cut")), default=None)

    resumed = subprocess.run(command(out / "cut", "--resume"), env=env, capture_output=True, text=True)
    report["resume_rc"] = resumed.returncode
    report["checks"]["resumed run exits 0"] = resumed.returncode == 0
    if full.returncode == 0 and resumed.returncode == 0:
        a, b = (load_model_state(out / r / "model.safetensors")[0] for r in ("full", "cut"))
        la, lb = ([r["train_loss"] for r in read_jsonl(out / r / "metrics.jsonl") if "train_loss" in r]
                  for r in ("full", "cut"))
        report["weights_max_abs_diff"] = max(float((a[k].float() - b[k].float()).abs().max()) for k in a)
        report["train_loss_max_abs_diff"] = max(abs(x - y) for x, y in zip(la, lb))
        report["bitwise_equal"] = all(torch.equal(a[k], b[k]) for k in a)
        report["checks"]["same steps logged"] = len(la) == len(lb) == args.steps
        report["checks"]["resume matches (loss within 1e-4)"] = report["train_loss_max_abs_diff"] < 1e-4
    else:
        report["stderr_tail"] = (full.stderr + resumed.stderr)[-3000:]
    report["ok"] = all(report["checks"].values())
    print(json.dumps(report))
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
