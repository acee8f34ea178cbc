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
