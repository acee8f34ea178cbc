"""The benchmark's report: length groups and the paired t-test over seeds (moved from test_benchmark.py
with the code, recbole_diffcl/report.py)."""
import numpy as np
import pytest

from recbole_diffcl import report
from recbole_diffcl.errors import UserError
from recbole_diffcl.report import LengthGroup, parse_length_groups


def test_length_groups():
    assert parse_length_groups(report.DEFAULT_LENGTH_GROUPS) == [
        LengthGroup("short", 1, 5), LengthGroup("mid", 6, 8), LengthGroup("long", 9, None)]
    groups = parse_length_groups("5,6-8,9-")
    assert [g.name for g in groups] == ["len5", "len6-8", "len9+"]
    lengths = np.array([4, 5, 6, 8, 9, 40])
    assert [g.contains(lengths).sum() for g in groups] == [1, 2, 2]
    assert [g.describe() for g in parse_length_groups("short=-5,9-")] == ["<= 5", ">= 9"]
    for bad in ("", "a-b", "8-6", "x=1,x=2", "1-5,5-9"):
        with pytest.raises(UserError):
            parse_length_groups(bad)


def test_paired_test_edge_cases():
    assert report.paired_test({1: 0.2, 2: 0.3}, {1: 0.2, 2: 0.3})["p"] == 1.0  # tie on every seed
    assert report.paired_test({1: 0.2}, {1: 0.1})["p"] is None  # one seed
    assert report.paired_test({1: 0.2, 2: 0.3}, {1: 0.1, 2: 0.2})["p"] is None  # same difference
    test = report.paired_test({1: 0.2, 2: 0.35, 3: 0.3}, {1: 0.1, 2: 0.2, 3: 0.29})
    assert 0 <= test["p"] <= 1 and test["n"] == 3 and test["diff"] == pytest.approx(0.26 / 3)


def test_sparsity_curve_from_benchmark_folders(tmp_path):
    pytest.importorskip("matplotlib")
    import pandas as pd

    def folder(name, rows):
        path = tmp_path / name
        path.mkdir()
        pd.DataFrame(rows).to_csv(path / "results.csv", index=False)
        return str(path)

    half = folder("keep-0.5", [{"model": "A", "seed": 1, "ndcg@10": 0.02, "hit@10": 0.05},
                               {"model": "A", "seed": 2, "ndcg@10": 0.04, "hit@10": 0.07}])
    full = folder("full", [{"model": "A", "seed": 1, "ndcg@10": 0.05, "hit@10": 0.09},
                           {"model": "B", "seed": 1, "ndcg@10": 0.06, "hit@10": 0.10}])
    out = tmp_path / "curve"
    assert report.main(["--curve", str(out), f"0.5={half}", f"1.0={full}"]) == 0
    text = (out / "summary.md").read_text()
    assert "| A | 0.0300 ± 0.0141 (2) | 0.0500 (1) |" in text  # NDCG@10: mean ± std over seeds, per ratio
    assert "| B |  | 0.0600 (1) |" in text  # no run at 0.5: an empty cell
    assert (out / "summary.png").stat().st_size > 0
    assert report.main(["--curve", str(out), "--models=B", f"0.5={half}", f"1.0={full}"]) == 0
    assert "| A |" not in (out / "summary.md").read_text()
    assert report.main(["--curve", str(out), "half=x"]) == 2
    assert report.main(["--curve", str(out), f"0.25={tmp_path / 'missing'}"]) == 2


def test_summary_figure_shows_seeds_on_a_fitted_axis_with_the_reference_line():
    pytest.importorskip("matplotlib")
    import matplotlib.pyplot as plt

    rows = [
        {"model": model, "seed": seed, "ndcg@10": ndcg, "hit@10": ndcg * 1.6, "seconds_per_epoch": 30.0 + seed}
        for model, values in (("A", (0.0563, 0.0557, 0.0565)), ("B", (0.0573, 0.0569, 0.0576)))
        for seed, ndcg in enumerate(values)
    ]
    table = report.Table(rows=rows, metrics=["ndcg@10", "hit@10"])
    fig = report.summary_figure(table, ["A", "B"], "t", reference="A")
    ndcg, hit, seconds = fig.axes
    low, high = ndcg.get_ylim()
    # models 2% apart: the axis spans the values, not 0 to the top (where they would look alike)
    assert 0.05 < low < 0.0557 and 0.0576 < high < 0.06
    assert 0.05 * 1.6 < hit.get_ylim()[0]
    assert seconds.get_ylim()[0] == 0  # the cost panel keeps bars from 0
    # each seed as a dot, and the reference model's mean as a horizontal line
    dots = sorted(y for line in ndcg.lines if len(line.get_ydata()) == 3 for y in line.get_ydata())
    assert dots == pytest.approx(sorted(r["ndcg@10"] for r in rows))
    flat = [line for line in ndcg.lines if len(set(line.get_ydata())) == 1 and len(line.get_xdata()) == 2]
    assert [line.get_ydata()[0] for line in flat] == pytest.approx([np.mean([0.0563, 0.0557, 0.0565])])
    plt.close(fig)
