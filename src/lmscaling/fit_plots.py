"""Figures of the scaling-law fits, drawn from the JSON result of ``fit_scaling_laws``.

Three figures, each written as PNG and SVG (atomically): the main figure (loss against N, D and
C on log-log axes with the power laws, their confidence bands and the extrapolation check), the
residuals of every fit, and the IsoFLOP curves with the compute-optimal model size.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from lmscaling.fit import AXES, group_label
from lmscaling.io import atomic_path


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, png_path: str | Path, svg_path: str | Path) -> None:
    plt = _pyplot()
    fig.tight_layout()
    # No date, fixed SVG ids: the same fit gives the same bytes.
    with plt.rc_context({"svg.hashsalt": "lmscaling"}):
        for path, fmt in ((png_path, "png"), (svg_path, "svg")):
            with atomic_path(path) as tmp:
                fig.savefig(tmp, format=fmt, dpi=130, metadata={"Date": None})
    plt.close(fig)


def _message_figure(text: str, png_path: str | Path, svg_path: str | Path) -> None:
    """A figure that only says why there is nothing to draw (the outputs still exist)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.5, 2.8))
    ax.text(0.5, 0.5, text, ha="center", va="center", fontsize=9, wrap=True)
    ax.set_axis_off()
    _save(fig, png_path, svg_path)


def _group_rows(result: dict, group: dict) -> list[dict]:
    key = (group["tokenizer"], group["eval_set"])
    return [p for p in result["points"] if (p["tokenizer"], p["eval_set"]) == key]


def _fewer_minor_labels(ax) -> None:
    """Minor ticks of a log x axis at 2 and 5 times the powers of ten, labelled when the axis
    spans at most 2 decades (beyond, the powers of ten suffice): on a narrow panel the default
    labels (2, 3, 4, 6 x 10^k) run into each other."""
    import matplotlib.ticker

    ticker = matplotlib.ticker
    lo, hi = ax.get_xlim()
    if hi / lo > 100:
        ax.xaxis.set_minor_formatter(ticker.NullFormatter())
        return
    ax.xaxis.set_minor_locator(ticker.LogLocator(subs=(2.0, 5.0)))
    inf = float("inf")
    ax.xaxis.set_minor_formatter(
        ticker.LogFormatterSciNotation(labelOnlyBase=False, minor_thresholds=(inf, inf))
    )


def _log_axes(ax, xlabel: str, ylabel: str = "held-out loss (nats/token)") -> None:
    import matplotlib.ticker

    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.yaxis.set_major_formatter(matplotlib.ticker.ScalarFormatter())
    ax.yaxis.set_minor_formatter(matplotlib.ticker.ScalarFormatter())
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(True, which="both", alpha=0.3)


def _fitted(entry) -> bool:
    return isinstance(entry, dict) and "skipped" not in entry


def plot_main(result: dict, png_path: str | Path, svg_path: str | Path) -> None:
    """Loss against each fitted axis on log-log axes, one panel per axis, one colour per group.

    Per panel: the points, the OLS power law ``L = a·X^b`` with its confidence band, the
    saturating law ``E + A·X^(−α)`` (dashed) with its bootstrap band, the held-out point(s) of
    the extrapolation check (open circles) with the prediction of the law refitted without them
    (crosses, relative error in the legend) and, on the C panel, the Chinchilla compute-optimal
    frontier ``L(N_opt(C), D_opt(C))`` (dotted).

    When no axis was fitted in any group (e.g. a single model, or ``fit.axes: [D]`` with one D
    for every model) the figure lists the reasons instead.
    """
    from lmscaling.chinchilla import ChinchillaFit, SaturatingPowerLawFit
    from lmscaling.fit import PowerLawFit

    plt = _pyplot()
    axes_present = [a for a in AXES if any(a in g["fits"] for g in result["groups"])]
    if not axes_present:
        reasons = {w for g in result["groups"] for w in g["warnings"] if "not fitted" in w}
        text = "No scaling law fitted:\n" + "\n".join(sorted(reasons))
        _message_figure(text, png_path, svg_path)
        return
    fig, axs = plt.subplots(1, len(axes_present), figsize=(5.6 * len(axes_present), 4.6))
    axs = np.atleast_1d(axs)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    conf = result["confidence"]
    for ax, axis in zip(axs, axes_present, strict=True):
        for i, group in enumerate(result["groups"]):
            entry = group["fits"].get(axis)
            if entry is None:
                continue
            color = colors[i % len(colors)]
            rows = _group_rows(result, group)
            x = np.array([float(p[axis]) for p in rows])
            y = np.array([float(p["loss"]) for p in rows])
            ax.scatter(x, y, color=color, zorder=3, s=18, label=group_label(group))
            lo_x, hi_x = x.min() / 1.5, x.max() * 3
            law = PowerLawFit.from_dict(entry)
            grid = np.geomspace(lo_x, hi_x, 120)
            r2 = f", R² = {entry['r2']:.3f}" if entry.get("r2") is not None else ""
            ax.plot(
                grid,
                law.predict(grid),
                color=color,
                label=f"L = {law.a:.3g}·{axis}^{law.b:.3f}{r2}",
            )
            if law.df_resid > 0:
                lo, hi = law.band(grid)
                ax.fill_between(grid, lo, hi, color=color, alpha=0.2, linewidth=0)
            sat = group.get("saturating", {}).get(axis)
            if _fitted(sat):
                s_law = SaturatingPowerLawFit.from_dict(sat, x_name=axis)
                p = sat["params"]
                ax.plot(
                    grid,
                    s_law.predict(grid),
                    color=color,
                    linestyle="--",
                    label=f"L = {p['E']:.3g} + {p['A']:.3g}·{axis}^-{p['alpha']:.3f}",
                )
                if s_law.samples is not None:
                    lo, hi = s_law.band(grid)
                    ax.fill_between(grid, lo, hi, color=color, alpha=0.08, linewidth=0)
            for record in group.get("extrapolation", []):
                if record["fit"] != f"L({axis}) power law":
                    continue
                hx = [h[axis] for h in record["held_out"]]
                ax.scatter(
                    hx,
                    [h["actual"] for h in record["held_out"]],
                    facecolors="none",
                    edgecolors="red",
                    s=90,
                    zorder=4,
                    label="held out: "
                    + ", ".join(f"{100 * h['rel_error']:+.1f}%" for h in record["held_out"]),
                )
                ax.scatter(
                    hx,
                    [h["predicted"] for h in record["held_out"]],
                    marker="x",
                    color="red",
                    zorder=4,
                    label=f"predicted without the largest {axis}",
                )
            chin = group.get("chinchilla")
            if axis == "C" and _fitted(chin):
                c_law = ChinchillaFit.from_dict(chin)
                ax.plot(
                    grid,
                    c_law.allocation(grid)["L_opt"],
                    color=color,
                    linestyle=":",
                    label="Chinchilla compute-optimal L(C)",
                )
            for p, xi, yi in zip(rows, x, y, strict=True):
                if p.get("model"):
                    ax.annotate(
                        p["model"], (xi, yi), fontsize=6, xytext=(3, 3), textcoords="offset points"
                    )
        _log_axes(ax, AXES[axis])
        ax.legend(fontsize=6)
        ax.set_title(f"L({axis}), {round(conf * 100)}% confidence bands")
    _save(fig, png_path, svg_path)


def plot_residuals(result: dict, png_path: str | Path, svg_path: str | Path) -> None:
    """Residuals ``ln L − ln L̂`` of every fit against its axis.

    One panel per single-axis fit (OLS power law: circles, saturating law: triangles) and one
    for the Chinchilla law against N; a structured pattern means the form does not fit.
    """
    plt = _pyplot()
    panels = [a for a in AXES if any(a in g["fits"] for g in result["groups"])]
    if any(_fitted(g.get("chinchilla")) for g in result["groups"]):
        panels.append("chinchilla")
    if not panels:
        _message_figure("no fit, no residuals", png_path, svg_path)
        return
    fig, axs = plt.subplots(1, len(panels), figsize=(4.8 * len(panels), 3.8), squeeze=False)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for ax, panel in zip(axs[0], panels, strict=True):
        for i, group in enumerate(result["groups"]):
            color = colors[i % len(colors)]
            rows = _group_rows(result, group)
            axis = "N" if panel == "chinchilla" else panel
            x = np.array([float(p[axis]) for p in rows])
            if panel == "chinchilla":
                chin = group.get("chinchilla")
                if _fitted(chin):
                    ax.scatter(x, chin["residuals"], color=color, s=14, label=group_label(group))
                continue
            entry = group["fits"].get(panel)
            if entry is None:
                continue
            ax.scatter(
                x, entry["residuals"], color=color, s=16, label=f"{group_label(group)}: a·X^b"
            )
            sat = group.get("saturating", {}).get(panel)
            if _fitted(sat):
                ax.scatter(x, sat["residuals"], color=color, marker="^", s=16, label="E + A·X^-α")
        ax.axhline(0.0, color="black", linewidth=0.8)
        ax.set_xscale("log")
        _fewer_minor_labels(ax)
        ax.set_xlabel(AXES["N"] if panel == "chinchilla" else AXES[panel])
        ax.set_ylabel("residual ln L − ln L̂")
        ax.set_title("Chinchilla L(N, D)" if panel == "chinchilla" else f"L({panel})")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=6)
    _save(fig, png_path, svg_path)


def plot_isoflop(result: dict, png_path: str | Path, svg_path: str | Path) -> None:
    """IsoFLOP curves (loss against N per budget, with parabolas and minima) and N_opt(C).

    Left: one colour per compute budget. Right: the minima with the IsoFLOP power law
    ``N_opt ∝ C^a`` and the Chinchilla allocation ``N_opt(C)`` with its bootstrap band. When
    the data allow neither analysis the figure says why.
    """
    from lmscaling.chinchilla import ChinchillaFit

    plt = _pyplot()
    groups = [
        g for g in result["groups"] if _fitted(g.get("isoflop")) or _fitted(g.get("chinchilla"))
    ]
    if not groups:
        reasons = {
            g.get(key, {}).get("skipped", "")
            for g in result["groups"]
            for key in ("isoflop", "chinchilla")
        }
        text = "No IsoFLOP or Chinchilla fit:\n" + "\n".join(sorted(r for r in reasons if r))
        _message_figure(text, png_path, svg_path)
        return
    fig, axs = plt.subplots(len(groups), 2, figsize=(11, 4.4 * len(groups)), squeeze=False)
    cmap = plt.get_cmap("viridis")
    for (ax_l, ax_r), group in zip(axs, groups, strict=True):
        iso, chin = group.get("isoflop"), group.get("chinchilla")
        c_all = np.array([float(p["C"]) for p in _group_rows(result, group)])
        if _fitted(iso):
            budgets = iso["budgets"]
            for j, b in enumerate(budgets):
                color = cmap(j / max(1, len(budgets) - 1))
                n = np.array(b["N"])
                ax_l.scatter(n, b["loss"], color=color, s=16, label=f"C = {b['C']:.2g}")
                if b["coef"] is not None:
                    grid = np.geomspace(n.min(), n.max(), 80)
                    ax_l.plot(grid, np.polyval(b["coef"], np.log(grid)), color=color)
                if b["used"]:
                    ax_l.scatter([b["N_opt"]], [b["L_opt"]], color=color, marker="*", s=120)
            used = [b for b in budgets if b["used"]]
            ax_r.scatter(
                [b["C"] for b in used], [b["N_opt"] for b in used], color="black", zorder=3
            )
            cg = np.geomspace(min(b["C"] for b in used) / 2, c_all.max() * 100, 50)
            ax_r.plot(
                cg,
                iso["k_N"] * cg ** iso["a"],
                color="black",
                label=f"IsoFLOP: N_opt ∝ C^{iso['a']:.3f}",
            )
            _log_axes(ax_l, AXES["N"])
            if len(budgets) <= 12:
                ax_l.legend(fontsize=6)
        else:
            ax_l.text(0.5, 0.5, iso.get("skipped", ""), ha="center", va="center", fontsize=8)
            ax_l.set_axis_off()
        ax_l.set_title(f"IsoFLOP curves, {group_label(group)}")
        if _fitted(chin):
            law = ChinchillaFit.from_dict(chin)
            cg = np.geomspace(c_all.min(), c_all.max() * 100, 80)
            ax_r.plot(
                cg,
                law.allocation(cg)["N_opt"],
                color="tab:red",
                label=f"Chinchilla: N_opt ∝ C^{chin['derived']['a']:.3f}",
            )
            if law.samples is not None:
                n_opt = law.allocation(cg, law.samples[:, None, :])  # (B, len(cg))
                q = [50 * (1 - law.confidence), 50 * (1 + law.confidence)]
                lo, hi = np.nanpercentile(n_opt["N_opt"], q, axis=0)
                ax_r.fill_between(cg, lo, hi, color="tab:red", alpha=0.15, linewidth=0)
        ax_r.set_xscale("log")
        ax_r.set_yscale("log")
        ax_r.set_xlabel(AXES["C"])
        ax_r.set_ylabel("compute-optimal N_opt (parameters)")
        ax_r.grid(True, which="both", alpha=0.3)
        ax_r.legend(fontsize=7)
        ax_r.set_title("Compute-optimal model size")
    _save(fig, png_path, svg_path)
