"""Forest plot of the task suite: each task's gap (arm - vanilla) with its seed-inclusive 95% interval.

Plain numbers in (rows of task, arm, mean, interval, Holm p), PNG bytes out; matplotlib imported lazily.
"""

from __future__ import annotations

from .style import arm_color, pyplot, save

ALPHA = 0.05


def forest_rows(result: dict, key: str = "gap") -> list[dict]:
    """One row per (task or task.variant, arm) of a tasks.json ``result``: label, arm, mean, lo, hi, p_holm, unit."""
    rows = []

    def add(label, rec, per_item):
        for arm, g in rec.get("gap", {}).items():
            ci = g.get("ci95") or [None, None]
            rows.append({"label": label, "arm": arm, "mean": g.get("mean"), "lo": ci[0], "hi": ci[1],
                         "p_holm": g.get("p_holm"), "per_item": per_item})

    for name, rec in result["tasks"].items():
        per_item = name.startswith("user:")
        add(name, rec, per_item)
        for v, sub in rec.get("variants", {}).items():
            add(f"{name} ({v.replace('_', ' ')})", sub, per_item)
    return rows


def forest_plot(rows: list[dict], title: str = "myopia gap per task (95% CI, seed-inclusive)") -> bytes:
    """Gap ± interval per task and arm, vertical line at 0; filled markers: Holm-adjusted p < 0.05."""
    plt = pyplot()
    groups = [("nats/token", [r for r in rows if not r["per_item"]]), ("nats/item (user tasks)",
                                                                     [r for r in rows if r["per_item"]])]
    groups = [(u, rs) for u, rs in groups if rs]
    labels_per = [list(dict.fromkeys(r["label"] for r in rs)) for _, rs in groups]
    heights = [max(1.5, 0.45 * len(ls) + 0.8) for ls in labels_per]
    fig, axes = plt.subplots(len(groups), 1, figsize=(8, sum(heights)), squeeze=False,
                             gridspec_kw={"height_ratios": heights})
    arms = list(dict.fromkeys(r["arm"] for r in rows))
    for ax, (unit, rs), labels in zip(axes[:, 0], groups, labels_per):
        offset = {a: (i - (len(arms) - 1) / 2) * 0.18 for i, a in enumerate(arms)}
        for r in rs:
            if r["mean"] is None:
                continue
            y = labels.index(r["label"]) + offset[r["arm"]]
            c = arm_color(r["arm"], arms.index(r["arm"]))
            if r["lo"] is not None and r["hi"] is not None:
                ax.plot([r["lo"], r["hi"]], [y, y], color=c, lw=1.6)
            sig = r["p_holm"] is not None and r["p_holm"] < ALPHA
            ax.plot([r["mean"]], [y], "o", ms=6, color=c, markerfacecolor=c if sig else "white")
        ax.axvline(0.0, color="k", lw=0.8)
        ax.set_yticks(range(len(labels)), labels)
        ax.invert_yaxis()
        ax.set_xlabel(f"gap = loss(arm) - loss(vanilla), {unit}")
        ax.grid(axis="x", alpha=0.3)
    for i, a in enumerate(arms):
        axes[0, 0].plot([], [], "o-", color=arm_color(a, i), label=a)
    axes[0, 0].plot([], [], "o", color="k", label=f"filled: Holm p < {ALPHA}")
    axes[0, 0].plot([], [], "o", color="k", markerfacecolor="white", label="hollow: not significant")
    axes[0, 0].legend(fontsize=7, loc="best")
    axes[0, 0].set_title(title)
    return save(fig)
