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


def position_r2_by_seed(by_position: dict, path: str | Path, seeds: list | None = None,
                        future: dict | None = None) -> bytes:
    """One panel per task: R² of a probe for sin(ω x_n) at each position n (best block, embedding excluded),
    one thin line per seed, one colour per arm.

    ``by_position``: {task: {arm: [R² indexed [layer][position], one per seed]}} (layer 0 the embedding);
    ``future``: {task: positions whose feature serves a later target}, shaded. Writes ``path``; returns PNG bytes.
    """
    plt = pyplot()
    fig, axes = plt.subplots(1, len(by_position), figsize=(5 * len(by_position), 3.6), squeeze=False,
                             layout="constrained")
    for ax, (task, arms) in zip(axes[0], by_position.items()):
        for arm, per_seed in arms.items():
            for i, r2 in enumerate(per_seed):
                best = np.nanmax(np.array(r2, dtype=float)[1:], axis=0)
                ax.plot(range(len(best)), np.clip(best, 0, 1), "o-", ms=2, lw=0.9, alpha=0.7,
                        color=arm_color(arm), label=arm if i == 0 else None)
        if future and future.get(task):
            ax.axvspan(min(future[task]) - 0.5, max(future[task]) + 0.5, color="0.92", zorder=0,
                       label="feature serves a later target")
        ax.set_ylim(-0.02, 1.02)
        ax.set_xlabel("position n")
        ax.set_ylabel("held-out R² for sin(ω x_n) (best block)")
        which = f"seeds {', '.join(map(str, seeds))}" if seeds else "every seed"
        ax.set_title(f"{task}: one line per seed ({which})", fontsize=9)
        ax.legend(fontsize=7)
    return save(fig, path)
