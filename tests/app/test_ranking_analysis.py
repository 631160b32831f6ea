"""app.leaderboard.analysis on small hand-made boards: hidden groups never appear one by one, the analysed
entries are capped, missing per-case results make an entry unusable, and the significance test's resamples
follow its rule."""

from __future__ import annotations

import math

import pytest

from app.leaderboard.analysis import AnalysisEntry, build_analysis, significance_resamples

GROUPS = {"a1": "A", "a2": "A", "b1": "B", "b2": "B", "c1": "C"}


def entry(sid: int, rank: int | None, tp: int, *, baseline: bool = False, skip: str | None = None) -> AnalysisEntry:
    cases = {name: {"tp": tp, "fp": 10 - tp, "fn": 10 - tp} for name in GROUPS if name != skip}
    return AnalysisEntry(sid, f"team {sid}", "", rank, baseline, cases)


def analyse(entries: list[AnalysisEntry], **kwargs: object) -> dict:
    options = {"seen_groups": None, "rules": "midog2022", "resamples": 200, "seed": 3, **kwargs}
    return build_analysis(entries, GROUPS, **options)  # type: ignore[arg-type]


def test_hidden_groups_never_appear_one_by_one() -> None:
    doc = analyse([entry(1, 1, 9), entry(2, 2, 6), entry(3, None, 3, baseline=True)], shown_groups=["A", "B"])
    assert doc["groups"] == ["A", "B"]
    assert set(doc["cases_per_group"]) == {"A", "B"}
    assert all(len(row) == 2 for row in doc["heatmap"]["f1"])
    assert all(len(row) == 2 for row in doc["rank_then_aggregate"]["group_ranks"])
    assert "C" not in str(doc)


def test_entries_are_capped_and_baselines_never_ranked() -> None:
    entries = [entry(i, i, 10 - i) for i in range(1, 7)] + [entry(99, None, 5, baseline=True)]
    doc = analyse(entries, max_entries=4)
    assert doc["ranked_total"] == 6
    assert [doc["entries"][i]["submission_id"] for i in doc["ranked"]] == [1, 2, 3, 4]
    assert len(doc["ranking"]["frequencies"]) == 4
    assert len(doc["heatmap"]["f1"]) == 7  # every entry has its heat-map row


def test_an_entry_without_every_case_is_left_out_and_one_ranked_entry_has_no_ranking() -> None:
    doc = analyse([entry(1, 1, 9), entry(2, 2, 6, skip="b2")])
    assert [e["submission_id"] for e in doc["entries"]] == [1]
    assert doc["ranking"] == {"available": False, "reason": "fewer than two ranked entries"}
    assert analyse([entry(2, 2, 6, skip="b2")])["available"] is False


def test_seen_unseen_gap_by_hand() -> None:
    doc = analyse([entry(1, 1, 8), entry(2, 2, 5)], seen_groups=["A"])
    assert doc["seen_groups"] == ["A"]
    row = doc["generalisation"][0]
    assert row["seen_f1"] == pytest.approx(0.8, abs=1e-6)
    assert row["unseen_f1"] == pytest.approx(0.8, abs=1e-6)
    assert row["seen_cases"] == 2
    assert row["unseen_cases"] == 3


@pytest.mark.parametrize(("entries", "resamples", "expected"), [(2, 1000, 1000), (8, 1000, 4480), (40, 1000, 10_000)])
def test_significance_resamples(entries: int, resamples: int, expected: int) -> None:
    got = significance_resamples(entries, resamples)
    assert got == expected
    pairs = entries * (entries - 1)
    if got < 10_000:
        assert pairs / (got + 1) <= 0.05 / 4
    assert got == max(resamples, min(10_000, math.ceil(4 * pairs / 0.05)))


def test_gaps_of_all_entries_at_once_equal_the_ranking_modules_per_entry() -> None:
    import numpy as np

    from worker.evaluation.ranking import seen_unseen_gap
    from worker.evaluation.types import Rules

    rng = np.random.default_rng(4)
    entries = [
        AnalysisEntry(e, f"t{e}", "", e + 1, False, {n: {"tp": int(rng.integers(0, 9)), "fp": int(rng.integers(0, 4)),
                                                         "fn": int(rng.integers(0, 4))} for n in GROUPS})
        for e in range(5)
    ]  # fmt: skip
    doc = analyse(entries, seen_groups=["A", "C"])
    names = sorted(GROUPS)
    for entry, row in zip(entries, doc["generalisation"], strict=True):
        counts = [[entry.cases[n][k] for k in ("tp", "fp", "fn")] for n in names]
        one = seen_unseen_gap(counts, [GROUPS[n] for n in names], {"A", "C"}, 200, 3, Rules.MIDOG2022)
        assert row == one.to_dict()
