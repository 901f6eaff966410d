"""What a run reports while it trains: ``metrics.jsonl``, TensorBoard scalars and progress on stderr (rank 0).

:class:`Progress` is a tqdm bar when stderr is a terminal, else a plain line at most every
``PROGRESS_INTERVAL_S`` seconds and at each evaluation. :class:`Recorder` appends training records (every
``log_every`` steps, with the throughput since the last record) and evaluation records to ``metrics.jsonl``,
mirrors them to TensorBoard under ``<run>/tensorboard`` when asked, and drives the progress display. On ranks
other than 0 every method is a no-op.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from .io import MetricsLog
from .rundir import METRICS

PROGRESS_INTERVAL_S = 30.0  # plain progress lines (stderr not a terminal) at most this often

# Process-wide display settings (see :func:`set_display`); the defaults leave a single run's display as it was.
_DISPLAY = {"label": "", "position": None, "plain_evaluations": True, "shared_clock": False}
_LAST_PLAIN = [0.0]  # time of the last plain line, when the clock is shared across runs


def set_display(label: str = "", position: int | None = None, *, plain_evaluations: bool = True,
                shared_clock: bool = False) -> None:
    """Process-wide progress display for the runs that follow (e.g. many small models in one process).

    ``label`` prefixes the bar and every plain line; ``position`` is the tqdm row (several processes sharing one
    terminal); ``plain_evaluations=False`` drops the per-evaluation lines when stderr is not a terminal;
    ``shared_clock`` spaces plain lines PROGRESS_INTERVAL_S apart across runs rather than within each run."""
    _DISPLAY.update(label=label, position=position, plain_evaluations=plain_evaluations, shared_clock=shared_clock)


def duration(seconds: float) -> str:
    s = int(round(seconds))
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s" if s >= 60 else f"{s}s"


class Progress:
    """A tqdm bar when stderr is a terminal; otherwise a plain line every PROGRESS_INTERVAL_S and at evaluations."""

    def __init__(self, total: int, start: int, enabled: bool):
        self.total, self.start, self.enabled = total, start, enabled
        self.bar = None
        self.t0 = self.last = time.perf_counter()
        self.label = _DISPLAY["label"]
        if _DISPLAY["shared_clock"]:
            self.last = _LAST_PLAIN[0] or self.t0
        if enabled and sys.stderr.isatty():
            from tqdm import tqdm

            pos = _DISPLAY["position"]
            self.bar = tqdm(total=total, initial=start, unit="step", dynamic_ncols=True, leave=pos is None,
                            desc=self.label or None, position=pos)

    def step(self, done: int, train_loss: float | None, tokens_per_s: float | None) -> None:
        if not self.enabled:
            return
        if self.bar is not None:
            if train_loss is not None:
                self.bar.set_postfix(loss=f"{train_loss:.4f}", tok_s=f"{tokens_per_s:,.0f}", refresh=False)
            self.bar.update(1)
            return
        now = time.perf_counter()
        if now - self.last >= PROGRESS_INTERVAL_S and train_loss is not None:
            self.last = _LAST_PLAIN[0] = now
            elapsed = now - self.t0
            eta = elapsed / max(done - self.start, 1) * (self.total - done)
            self.line(f"step {done}/{self.total}  train {train_loss:.4f}  {tokens_per_s:,.0f} tok/s  "
                      f"elapsed {duration(elapsed)}  eta {duration(eta)}")

    def line(self, text: str, evaluation: bool = False) -> None:
        if not self.enabled:
            return
        text = f"{self.label}  {text}" if self.label else text
        if self.bar is not None:
            self.bar.write(text, file=sys.stderr)
        elif not evaluation or _DISPLAY["plain_evaluations"]:
            print(text, file=sys.stderr, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


class Board:
    """TensorBoard scalars under ``<out>/tensorboard`` (events after a resumed checkpoint's step are purged)."""

    def __init__(self, out: Path, start_step: int):
        from torch.utils.tensorboard import SummaryWriter

        # purge_step hides earlier events with step >= it; those *at* the checkpoint's step stay valid
        purge = start_step + 1 if start_step else None
        self.writer = SummaryWriter(log_dir=str(out / "tensorboard"), purge_step=purge)

    def add(self, prefix: str, record: dict, step: int) -> None:
        for k, v in record.items():
            if k != "step" and isinstance(v, (int, float)) and not isinstance(v, bool):
                self.writer.add_scalar(f"{prefix}/{k}", v, step)

    def close(self) -> None:
        self.writer.flush()
        self.writer.close()


class Recorder:
    """metrics.jsonl + TensorBoard + progress for one run (active on the main process only)."""

    def __init__(self, out: Path, *, steps: int, start_step: int, log_every: int, tokens_per_step: int,
                 progress: bool, tensorboard: bool, active: bool):
        self.active, self.steps, self.log_every, self.tokens_per_step = active, steps, max(1, log_every), tokens_per_step
        self.log = MetricsLog(out / METRICS)
        self.progress = Progress(steps, start_step, progress and active)
        self.board = Board(out, start_step) if tensorboard and active else None
        self.t_start = self.t_window = time.perf_counter()
        self.tokens_window = 0

    def elapsed(self) -> float:
        return time.perf_counter() - self.t_start

    def _record(self, rec: dict, prefix: str) -> None:
        self.log.append(rec)
        if self.board is not None:
            self.board.add(prefix, rec, rec["step"])

    def train_step(self, done: int, train_loss: float, lr: float, grad_norm: float) -> None:
        """After each optimizer step: a metrics record every ``log_every`` steps (and at the last)."""
        self.tokens_window += self.tokens_per_step
        if not self.active:
            return
        tps = None
        if done % self.log_every == 0 or done == self.steps:
            now = time.perf_counter()
            tps = self.tokens_window / max(now - self.t_window, 1e-9)
            self.tokens_window, self.t_window = 0, now
            self._record({"step": done, "train_loss": train_loss, "lr": lr, "grad_norm": grad_norm,
                          "tokens": done * self.tokens_per_step, "tokens_per_s": tps,
                          "elapsed_s": now - self.t_start}, "train")
        self.progress.step(done, train_loss if tps is not None else None, tps)

    def evaluation(self, done: int, train_loss: float, metrics: dict) -> None:
        if not self.active:
            return
        self._record({"step": done, **{f"eval_{k}": v for k, v in metrics.items()}}, "eval")
        self.progress.line(f"step {done}/{self.steps}  train {train_loss:.4f}  eval {metrics['loss']:.4f}",
                           evaluation=True)

    def note(self, text: str) -> None:
        self.progress.line(text)

    def close(self) -> None:
        self.progress.close()
        if self.board is not None:
            self.board.close()
