"""augment/figures.py: Fig. 7 keeps one colour per CF source across its panels."""

from __future__ import annotations

from augment import figures


def _row(kind, scenario, source, ratio, seed, f1, status="ok"):
    return {"kind": kind, "scenario": scenario, "source": source, "ratio": ratio, "seed": seed,
            "status": status, "metrics": {"F1": f1}}


def test_fig7_colours_a_source_alike_in_every_panel(tmp_path, monkeypatch):
    results = [_row("baseline", None, None, None, s, 0.7) for s in (0, 1)]
    for sc in ("A", "B"):
        results += [_row("reduced", sc, None, None, s, 0.6) for s in (0, 1)]
        for ratio in (0.5, 1.0):
            results += [_row("augmented", sc, "teacher", ratio, s, 0.65) for s in (0, 1)]
            # "llm" fills A only: in B every cell is insufficient, so B draws teacher alone.
            results += [_row("augmented", sc, "llm", ratio, s, 0.62, "ok" if sc == "A" else "insufficient")
                        for s in (0, 1)]
    kept = []
    monkeypatch.setattr(figures.plt, "close", kept.append)
    figures.plot_fig7(results, tmp_path / "fig7.png")
    (fig,) = kept
    colours = [{line.get_label(): line.get_color() for line in ax.lines if not line.get_label().startswith("_")}
               for ax in fig.axes]
    # sorted sources: llm C0, teacher C1; each legend entry says the source's protocol
    assert colours[0]["teacher (sensecf)"] == colours[1]["teacher (sensecf)"] == "C1"
    assert colours[0]["llm (paper)"] == "C0" and "llm (paper)" not in colours[1]
    assert all(ax.get_legend() is not None for ax in fig.axes)
    assert (tmp_path / "fig7.png").stat().st_size > 0
