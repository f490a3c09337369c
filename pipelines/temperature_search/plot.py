"""PNG of a temperature search: stage-1 teacher figures and stage-2 trial figures against tau."""

from __future__ import annotations

from pathlib import Path

from pipelines.temperature_search.outcome import SearchOutcome


def plot_search(outcome: SearchOutcome, path: Path) -> Path:
    """Two-panel PNG at ``path``: left the teacher scan (NLLs), right the trials (FS, RS, fluency) per strength."""
    import matplotlib

    matplotlib.use("Agg")  # no display: files only
    import matplotlib.pyplot as plt

    taus = [r.tau for r in outcome.scan]
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    left.plot(taus, [r.content_nll for r in outcome.scan], "o-", label="content-token NLL (forget)")
    left.plot(taus, [r.function_nll for r in outcome.scan], "s-", label="function-token NLL (forget)")
    left.plot(taus, [r.retain_nll for r in outcome.scan], "^-", label="answer NLL (retain)")
    left.set_xlabel("tau")
    left.set_ylabel("teacher NLL (nats/token)")
    left.set_title("stage 1: smoothed teacher")
    twin = left.twinx()
    twin.plot(taus, [r.forget.token_entropy for r in outcome.scan], "k--", alpha=0.6, label="teacher token entropy")
    twin.plot(taus, [r.forget.fluent_share for r in outcome.scan], "k:", alpha=0.6, label="teacher fluent share")
    twin.set_ylim(0, 1.05)
    for tau in outcome.candidates:
        left.axvline(tau, color="tab:green", alpha=0.25, lw=6)
    handles = left.get_legend_handles_labels()[0] + twin.get_legend_handles_labels()[0]
    left.legend(handles=handles, fontsize=7, loc="upper left")

    groups = sorted({(t.rung, t.learning_rate, t.forget_weight, t.epochs) for t in outcome.trials})
    for i, (rung, lr, weight, epochs) in enumerate(groups):
        trials = sorted((t for t in outcome.trials if (t.rung, t.learning_rate, t.forget_weight) == (rung, lr, weight)),
                        key=lambda t: t.tau)
        x, alpha = [t.tau for t in trials], 0.4 + 0.6 * (i + 1) / len(groups)
        tag = f"lr {lr:.2g}, lambda {weight:g}, {epochs} ep"
        right.plot(x, [t.forget_score for t in trials], "o-", color="tab:red", alpha=alpha, label=f"FS ({tag})")
        right.plot(x, [t.retain_score for t in trials], "s-", color="tab:blue", alpha=alpha, label=f"RS ({tag})")
        right.plot(x, [t.forget.fluent_share for t in trials], "^:", color="tab:green", alpha=alpha,
                   label=f"fluent share ({tag})")
        broken = [t for t in trials if not t.feasible]
        right.plot([t.tau for t in broken], [t.forget_score for t in broken], "x", color="k", ms=10,
                   label="breaks a floor" if i == len(groups) - 1 else None)
    right.axhline(outcome.floors.get("forget_score", 0), color="tab:red", ls="--", lw=0.8, label="effect floor")
    right.axhline(outcome.floors.get("retain_score", 0), color="tab:blue", ls="--", lw=0.8, label="utility floor")
    if outcome.tau is not None:
        right.axvline(outcome.tau, color="k", lw=1, label=f"chosen tau {outcome.tau:g}")
    right.set_xlabel("tau")
    right.set_xlim(left.get_xlim())
    right.set_ylim(0, 1.05)
    right.set_title("stage 2: trials on the validation items"
                    + ("" if outcome.tau is not None else f" ({outcome.status})"))
    right.legend(fontsize=7, loc="lower left")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
