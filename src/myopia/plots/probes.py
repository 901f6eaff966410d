"""Figures of probes: future-token probes by layer (``probe.json``) and the synthetic tasks' lookback R² maps.

Numbers come from :mod:`myopia.probes` and :mod:`myopia.synthetic.probes`; this module only draws them.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .style import arm_color, pyplot, save


def plot_probe(summary: dict, path: str | Path) -> bytes:
    """Probe accuracy (top) and cross-entropy (bottom) against layer, one column per future offset k, one line per
    model, with the most-frequent-token / unigram baselines. Writes ``path``; returns the PNG bytes."""
    plt = pyplot()
    ks = summary["ks"]
    fig, axes = plt.subplots(2, len(ks), figsize=(4 * len(ks), 6.5), squeeze=False)
    for j, k in enumerate(ks):
        baseline = None
        for i, (name, res) in enumerate(summary["models"].items()):
            layers = sorted(res["layers"], key=int)
            rows = [res["layers"][layer][str(k)] for layer in layers]
            xs = [int(layer) for layer in layers]
            axes[0][j].plot(xs, [r["accuracy"] for r in rows], marker="o", color=arm_color(name, i), label=name)
            axes[1][j].plot(xs, [r["ce"] for r in rows], marker="o", color=arm_color(name, i), label=name)
            baseline = rows[0]
        if baseline is not None:
            axes[0][j].axhline(baseline["baseline_accuracy"], color="grey", ls=":", label="most frequent token")
            axes[1][j].axhline(baseline["baseline_ce"], color="grey", ls=":", label="unigram")
        axes[0][j].set_title(f"token at t+{k}: accuracy")
        axes[1][j].set_title(f"token at t+{k}: cross-entropy (nats)")
        axes[1][j].set_xlabel("layer (0 = embeddings)")
        for ax in (axes[0][j], axes[1][j]):  # layers are whole numbers
            ax.xaxis.set_major_locator(plt.MaxNLocator(integer=True))
    axes[0][0].legend(fontsize=7)
    fig.suptitle(f"future-token probes: trained on {summary['train_split']}, scored on {summary['eval_split']} "
                 f"({Path(summary['data']).name})", fontsize=9)
    fig.tight_layout()
    return save(fig, path)


def probe_heatmap(probes: dict, path: str | Path, title: str = "") -> bytes:
    """Rows: gradient settings; columns: probe targets (sin(ω x_{n−i}), x_{n−i}); each panel: layer × lookback R².

    ``probes``: {gradient: result of :func:`myopia.synthetic.probes.lookback_probes`}. Writes ``path``; returns
    the PNG bytes.
    """
    plt = pyplot()
    targets = [("sin", r"$\sin(\omega x_{n-i})$"), ("x", r"$x_{n-i}$")]
    fig, axes = plt.subplots(len(probes), 2, figsize=(11, 0.8 + 2.2 * len(probes)), squeeze=False,
                             layout="constrained")
    image = None
    for row, (gradient, p) in enumerate(probes.items()):
        for col, (key, label) in enumerate(targets):
            ax = axes[row][col]
            r2 = np.clip(np.array(p[key], dtype=float), 0.0, 1.0)
            image = ax.imshow(r2, vmin=0, vmax=1, cmap="viridis", aspect="auto", origin="lower")
            ax.set_yticks(range(len(p["layers"])))
            ax.set_yticklabels([("embed" if layer == 0 else f"block {layer}") for layer in p["layers"]], fontsize=7)
            ax.set_xticks(range(len(p["lags"])))
            ax.set_xticklabels(p["lags"], fontsize=7)
            ax.set_title(f"{gradient}: R² for {label}", fontsize=9)
            if row == len(probes) - 1:
                ax.set_xlabel("lookback i")
    if image is not None:
        fig.colorbar(image, ax=axes, shrink=0.6, label="held-out R² (clipped to [0, 1])")
    if title:
        fig.suptitle(title, fontsize=10)
    return save(fig, path)
