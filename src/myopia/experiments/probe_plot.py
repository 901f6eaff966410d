"""Plot of ``probe.json``: probe accuracy and cross-entropy by layer, one panel per future offset k."""

from __future__ import annotations

from pathlib import Path


def plot_probe(summary: dict, path: str | Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ks = summary["ks"]
    fig, axes = plt.subplots(2, len(ks), figsize=(4 * len(ks), 6.5), squeeze=False)
    for j, k in enumerate(ks):
        baseline = None
        for i, (name, res) in enumerate(summary["models"].items()):
            layers = sorted(res["layers"], key=int)
            rows = [res["layers"][layer][str(k)] for layer in layers]
            xs = [int(layer) for layer in layers]
            axes[0][j].plot(xs, [r["accuracy"] for r in rows], marker="o", color=f"C{i}", label=name)
            axes[1][j].plot(xs, [r["ce"] for r in rows], marker="o", color=f"C{i}", label=name)
            baseline = rows[0]
        if baseline is not None:
            axes[0][j].axhline(baseline["baseline_accuracy"], color="grey", ls=":", label="most frequent token")
            axes[1][j].axhline(baseline["baseline_ce"], color="grey", ls=":", label="unigram")
        axes[0][j].set_title(f"token at t+{k}: accuracy")
        axes[1][j].set_title(f"token at t+{k}: cross-entropy (nats)")
        axes[1][j].set_xlabel("layer (0 = embeddings)")
    axes[0][0].legend(fontsize=7)
    fig.suptitle(f"future-token probes: trained on {summary['train_split']}, scored on {summary['eval_split']} "
                 f"({Path(summary['data']).name})", fontsize=9)
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
