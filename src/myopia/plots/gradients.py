"""Plot of ``grad.json``: myopic/future gradient norms, cosines and shares over a series of checkpoints."""

from __future__ import annotations

from pathlib import Path

from .style import pyplot, save

STYLE = {"myopic": "-", "myopic-hidden": "--"}


def plot_grad(summary: dict, path: str | Path) -> bytes:
    """Four panels: norms (group ``all``), cosines, future share over the series; future share per layer (last).

    Writes ``path``; returns the PNG bytes.
    """
    plt = pyplot()
    results = summary["results"]
    have_steps = all(r.get("step") is not None for r in results)
    steps = [r["step"] for r in results] if have_steps else list(range(len(results)))
    xlabel = "training step" if have_steps else "checkpoint (in the order given)"
    fig, axes = plt.subplots(1, 4, figsize=(18, 4))
    for part in summary["parts"]:
        ok = [(s, r[part]["all"]) for s, r in zip(steps, results) if "error" not in r[part]]
        if not ok:
            continue
        xs = [s for s, _ in ok]
        ls = STYLE.get(part, ":")
        if part == summary["parts"][0]:
            axes[0].plot(xs, [g["norm_total"] for _, g in ok], "k" + ls, marker="o", label="total")
        axes[0].plot(xs, [g["norm_myopic"] for _, g in ok], "C0" + ls, marker="o", label=f"{part}: myopic")
        axes[0].plot(xs, [g["norm_future"] for _, g in ok], "C3" + ls, marker="o", label=f"{part}: future")
        axes[1].plot(xs, [g["cos_myopic_future"] for _, g in ok], "C2" + ls, marker="o",
                     label=f"{part}: myopic·future")
        axes[1].plot(xs, [g["cos_future_total"] for _, g in ok], "C3" + ls, marker="o", label=f"{part}: future·total")
        axes[2].plot(xs, [g["future_share"] for _, g in ok], "C3" + ls, marker="o", label=part)
        last = results[-1][part]
        layers = sorted(int(k.split(".")[1]) for k in last if k.count(".") == 1 and k.startswith("layer."))
        offset = -0.2 if part == summary["parts"][0] else 0.2
        axes[3].bar([i + offset for i in layers], [last[f"layer.{i}"]["future_share"] or 0 for i in layers],
                    width=0.4, label=part)
    axes[0].set_yscale("log")
    axes[0].set_title("gradient norm (all parameters)")
    axes[1].set_title("cosine")
    axes[1].axhline(0, color="grey", lw=0.5)
    axes[2].set_title("future share <future, total> / |total|²")
    axes[3].set_title("future share per layer (last checkpoint)")
    axes[3].set_xlabel("layer")
    axes[3].xaxis.get_major_locator().set_params(integer=True)
    for ax in axes[:3]:
        ax.set_xlabel(xlabel)
    for ax in axes:
        ax.legend(fontsize=7)
    fig.suptitle(f"gradient decomposition on {summary['sample']['windows']} windows x {summary['sample']['seq_len']} "
                 f"tokens of {Path(summary['data']).name} ({summary['split']})", fontsize=9)
    fig.tight_layout()
    return save(fig, path)
