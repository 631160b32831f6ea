"""worker.evaluation.representation on hand-made feature vectors: the Wasserstein shift against the seen
groups or the others, the leave-one-case-out scanner classifier, and the checks on what a run wrote."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from worker.evaluation.representation import (
    FeaturesError,
    read_case_features,
    representation_shift,
    scanner_classifier,
)

GROUPS = {"a1": "A", "a2": "A", "b1": "B", "b2": "B", "c1": "C", "c2": "C"}


def _features(values: dict[str, list[float]]) -> dict[str, np.ndarray]:
    return {name: np.asarray(v, dtype=np.float64) for name, v in values.items()}


def test_shift_against_the_seen_group_by_hand() -> None:
    # channel 0: A at {0, 0}, B at {1, 1}, C at {0, 2}; channel 1 constant 5 everywhere
    features = _features({"a1": [0, 5], "a2": [0, 5], "b1": [1, 5], "b2": [1, 5], "c1": [0, 5], "c2": [2, 5]})
    doc = representation_shift(features, GROUPS, seen=["A"])
    assert doc["available"] is True
    assert doc["reference"] == "seen groups (A)"
    assert set(doc["shift"]) == {"B", "C"}  # the seen group is the reference, not shifted against itself
    # W1(B, A) on channel 0: every unit of mass moves by 1 -> 1; channel 1: 0 -> mean over channels 0.5
    assert doc["shift"]["B"]["wasserstein"] == pytest.approx(0.5)
    # W1({0, 2}, {0, 0}) = half the mass moves by 2 = 1 -> mean 0.5
    assert doc["shift"]["C"]["wasserstein"] == pytest.approx(0.5)
    assert doc["mean_shift"] == pytest.approx(0.5)
    assert doc["channels"] == 2
    assert "MIDL 2021" in doc["caveat"]


def test_without_seen_groups_each_group_is_compared_with_all_others() -> None:
    features = _features({"a1": [0], "a2": [0], "b1": [0], "b2": [0], "c1": [3], "c2": [3]})
    doc = representation_shift(features, GROUPS)
    assert doc["reference"] == "all other groups"
    # C at {3, 3} against {0, 0, 0, 0}: 3; A at {0, 0} against {0, 0, 3, 3}: half the mass moves by 3 = 1.5
    assert doc["shift"]["C"]["wasserstein"] == pytest.approx(3.0)
    assert doc["shift"]["A"]["wasserstein"] == pytest.approx(1.5)


def test_scanner_classifier_by_hand() -> None:
    labels = np.array(["A", "A", "B", "B"])
    separated = np.array([[0.0, 0.0], [0.1, 0.0], [5.0, 5.0], [5.1, 5.0]])
    assert scanner_classifier(separated, labels) == pytest.approx(1.0)
    # one case of each group sits with the other group: left out, it is nearer the other mean
    mixed = np.array([[0.0], [5.0], [5.1], [0.1]])
    assert scanner_classifier(mixed, labels) == pytest.approx(0.0)
    assert scanner_classifier(separated[:3], labels[:3]) is None  # B has a single case
    assert scanner_classifier(separated[:2], labels[:2]) is None  # one group


def test_nothing_to_compare_says_why() -> None:
    assert representation_shift({}, GROUPS) == {"available": False, "reason": "no case has features"}
    one = _features({"a1": [1], "a2": [2]})
    assert representation_shift(one, GROUPS)["reason"] == "the cases come from a single group"


def _write(directory: Path, name: str, body: object) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / f"{Path(name).stem}.json").write_text(json.dumps(body))


def test_read_case_features_checks_every_file(tmp_path: Path) -> None:
    good = tmp_path / "good"
    for name in ("001.tiff", "002.tiff"):
        _write(good, name, {"features": [1.0, 2.0, 3.0]})
    got = read_case_features(good, ["001.tiff", "002.tiff"])
    assert set(got) == {"001.tiff", "002.tiff"}
    assert got["001.tiff"].tolist() == [1.0, 2.0, 3.0]

    with pytest.raises(FeaturesError, match="case 003.tiff: no features were written"):
        read_case_features(good, ["001.tiff", "003.tiff"])
    cases = {
        "nan": ({"features": [1.0, None]}, "not .'features'|finite numbers"),
        "short": ({"features": [1.0]}, "1 features where the other cases have 3"),
        "shape": ({"features": [[1.0, 2.0]]}, "finite numbers"),
        "key": ({"values": [1.0]}, "is not"),
    }
    for tag, (body, message) in cases.items():
        directory = tmp_path / tag
        _write(directory, "001.tiff", {"features": [1.0, 2.0, 3.0]})
        _write(directory, "002.tiff", body)
        with pytest.raises(FeaturesError, match=message):
            read_case_features(directory, ["001.tiff", "002.tiff"])
    big = tmp_path / "big"
    big.mkdir()
    (big / "001.json").write_text(json.dumps({"features": [0.0] * 60_000}))
    with pytest.raises(FeaturesError, match="larger than"):
        read_case_features(big, ["001.tiff"])
