"""Readers and validators: every format, and errors that name file, case, point and rule."""

import json
from pathlib import Path

import numpy as np
import pytest

from worker.evaluation.io import (
    FormatError,
    check_cases,
    load_ground_truth,
    parse_multiple_points,
    read_json,
    read_predictions,
)
from worker.evaluation.types import CasePredictions


def mp(*points: dict) -> dict:
    return {"type": "Multiple points", "points": list(points), "version": {"major": 1, "minor": 0}}


def write(path: Path, data: object) -> Path:
    path.write_text(json.dumps(data))
    return path


@pytest.mark.parametrize(
    ("point", "message"),
    [
        ({"point": [0.1, 0.2]}, "point 1: point: expected a list of exactly 3 numbers"),
        ({"point": [0.1, 0.2, 0, 0]}, "expected a list of exactly 3 numbers"),
        ({"point": [0.1, "0.2", 0]}, "coordinates must be numbers, got str"),
        ({"point": [0.1, True, 0]}, "coordinates must be numbers, got bool"),
        ({"point": [0.1, 1e400, 0]}, "coordinates must be finite"),
        ({"point": [0.1, 0.2, 0], "probability": 1.5}, "probability: must lie in [0, 1], got 1.5"),
        ({"point": [0.1, 0.2, 0], "probability": -0.1}, "must lie in [0, 1]"),
        ({"point": [0.1, 0.2, 0], "probability": "high"}, "probability: must be a number, got str"),
        ({"point": [0.1, 0.2, 0], "name": "Mitotic Figure"}, "name: must be"),
        ({"points": [0.1, 0.2, 0]}, 'missing "point"'),
    ],
)
def test_bad_points_are_rejected_with_case_index_and_rule(point: dict, message: str) -> None:
    with pytest.raises(FormatError) as info:
        parse_multiple_points(mp({"point": [0.0, 0.0, 0.0]}, point), source="preds.json", case="007.tiff")
    text = str(info.value)
    assert text.startswith("preds.json: case '007.tiff': point 1")
    assert message in text
    assert "\n" not in text


@pytest.mark.parametrize("constant", ["NaN", "Infinity", "-Infinity"])
def test_non_finite_json_constants_are_rejected(tmp_path: Path, constant: str) -> None:
    path = tmp_path / "p.json"
    body = '{"a.tiff": {"type": "Multiple points", "points": [{"point": [0.1, CONSTANT, 0]}]}}'
    path.write_text(body.replace("CONSTANT", constant))
    with pytest.raises(FormatError, match=f"p.json: {constant} is not allowed"):
        read_predictions(path)


def test_deep_nesting_and_broken_json_are_one_line_errors(tmp_path: Path) -> None:
    deep = tmp_path / "deep.json"
    deep.write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(FormatError, match="nested too deeply"):
        read_json(deep)
    broken = tmp_path / "broken.json"
    broken.write_text('{"a": [1, 2,,]}')
    with pytest.raises(FormatError, match=r"broken.json: invalid JSON at line 1 column 13"):
        read_json(broken)


def test_wrong_type_field_and_point_limit() -> None:
    with pytest.raises(FormatError, match='type must be "Multiple points"'):
        parse_multiple_points({"type": "Point", "points": []}, source="f", case="c")
    with pytest.raises(FormatError, match="3 points exceed the limit of 2"):
        parse_multiple_points(mp(*[{"point": [0, 0, 0]}] * 3), source="f", case="c", max_points=2)


def test_names_and_missing_probabilities() -> None:
    parsed = parse_multiple_points(
        mp(
            {"point": [0.1, 0.2, 0], "probability": 0.7, "name": "mitotic figure"},
            {"point": [0.3, 0.4, 0], "name": "non-mitotic figure"},
            {"point": [0.5, 0.6, 0], "probability": None},
        ),
        source="f",
        case="c",
    )
    assert parsed.mitotic.tolist() == [True, False, True]
    assert parsed.probabilities[0] == 0.7
    assert np.isnan(parsed.probabilities[1:]).all()


def test_json_mapping_directory_and_csv_read_the_same_points(tmp_path: Path) -> None:
    a = mp({"point": [0.1, 0.2, 0], "probability": 0.9, "name": "mitotic figure"}, {"point": [0.3, 0.4, 0]})
    b = mp()
    mapping = read_predictions(write(tmp_path / "all.json", {"001.tiff": a, "002.tiff": b}))
    folder = tmp_path / "dir"
    folder.mkdir()
    write(folder / "001.json", a)
    write(folder / "002.json", b)
    from_dir = read_predictions(folder)
    csv_path = tmp_path / "p.csv"
    csv_path.write_text("image,x,y,z,probability,name\n001.tiff,0.1,0.2,0,0.9,mitotic figure\n001.tiff,0.3,0.4,0,,\n")
    from_csv = read_predictions(csv_path, csv_units="mm")
    assert sorted(from_dir) == ["001", "002"]
    for other in (from_dir["001"], from_csv["001.tiff"]):
        np.testing.assert_array_equal(other.points, mapping["001.tiff"].points)
        np.testing.assert_array_equal(other.mitotic, mapping["001.tiff"].mitotic)
        np.testing.assert_array_equal(other.probabilities, mapping["001.tiff"].probabilities)


def test_csv_pixel_units_use_the_spacing_and_a_unit_column(tmp_path: Path) -> None:
    path = tmp_path / "p.csv"
    path.write_text("image,x,y,probability,unit\na.tiff,1000,2000,0.5,px\na.tiff,0.1,0.2,0.5,mm\n")
    preds = read_predictions(path, spacing_mm=0.00025)
    np.testing.assert_allclose(preds["a.tiff"].points, [[0.25, 0.5, 0.0], [0.1, 0.2, 0.0]])
    with pytest.raises(FormatError, match="need a pixel spacing"):
        read_predictions(path)


def test_csv_errors_name_the_row_and_column(tmp_path: Path) -> None:
    path = tmp_path / "p.csv"
    path.write_text("image,x,y,probability\na.tiff,0.1,abc,0.5\n")
    with pytest.raises(FormatError, match=r"p.csv: case 'a.tiff': point 2: y: not a number: 'abc'"):
        read_predictions(path, csv_units="mm")
    path.write_text("image,x\na.tiff,0.1\n")
    with pytest.raises(FormatError, match="lacks column"):
        read_predictions(path, csv_units="mm")


def test_official_2022_and_2025_ground_truth(tmp_path: Path) -> None:
    gt22 = load_ground_truth(write(tmp_path / "gt22.json", {"001.tiff": [[0.1, 0.2, 0]], "002.tiff": []}))
    assert list(gt22.cases) == ["001.tiff", "002.tiff"]
    assert gt22.cases["002.tiff"].shape == (0, 3)
    gt25 = load_ground_truth(
        write(
            tmp_path / "gt25.json",
            {"a.tiff": {"annotations": [[0.1, 0.2, 0]], "tumor domain": 3, "roi type": "hotspot"}},
        )
    )
    assert gt25.labels == {"a.tiff": {"tumor domain": "3", "roi type": "hotspot"}}
    assert gt25.group_map() == {"a.tiff": ["tumor domain=3", "roi type=hotspot"]}


def test_midog_json_boxes_become_mm_centres_and_category_2_is_dropped(tmp_path: Path) -> None:
    data = {
        "images": [{"id": 1, "file_name": "001.tiff", "width": 100, "height": 100}],
        "categories": [{"id": 1, "name": "mitotic figure"}, {"id": 2, "name": "not mitotic figure"}],
        "annotations": [
            {"image_id": 1, "category_id": 1, "bbox": [100, 200, 150, 250]},
            {"image_id": 1, "category_id": 2, "bbox": [10, 20, 60, 70]},
        ],
    }
    gt = load_ground_truth(write(tmp_path / "MIDOG.json", data), spacing_mm=0.00025)
    np.testing.assert_array_equal(gt.cases["001.tiff"], [[0.00025 * 125, 0.00025 * 225, 0.0]])
    with pytest.raises(FormatError, match="pixel spacing"):
        load_ground_truth(tmp_path / "MIDOG.json")
    data["annotations"][0]["bbox"] = [1, 2, 3]
    with pytest.raises(FormatError, match=r"annotations\[0\].bbox: expected 4 numbers"):
        load_ground_truth(write(tmp_path / "bad.json", data), spacing_mm=0.00025)


def test_real_midogpp_database_loads_with_tumour_groups() -> None:
    path = Path(__file__).resolve().parents[1] / "data" / "midogpp" / "MIDOG++.json"  # shipped with the tests
    gt = load_ground_truth(path, spacing_mm=0.00025)
    assert len(gt.cases) == 553
    assert sum(len(p) for p in gt.cases.values()) == 11_937
    assert "tumor type=human breast cancer" in {g for groups in gt.group_map().values() for g in groups}


def test_check_cases_against_a_test_set() -> None:
    extents = {"001.tiff": (1.0, 0.5), "002.tiff": (1.0, 0.5)}
    good = {"001": CasePredictions.from_points([(0.5, 0.25, 0)]), "002.tiff": CasePredictions.empty()}
    assert set(check_cases(good, extents=extents)) == {"001.tiff", "002.tiff"}
    with pytest.raises(FormatError, match="case '001.tiff': point 0: point \\(1.5, 0.25\\) mm lies outside"):
        check_cases({**good, "001": CasePredictions.from_points([(1.5, 0.25, 0)])}, extents=extents)
    with pytest.raises(FormatError, match="unknown image name\\(s\\): '003'"):
        check_cases({**good, "003": CasePredictions.empty()}, extents=extents)
    with pytest.raises(FormatError, match="missing predictions for 1 image\\(s\\): '002.tiff'"):
        check_cases({"001": good["001"]}, extents=extents)


def test_a_key_given_twice_is_refused_naming_it(tmp_path: Path) -> None:
    """json.loads would keep the last of two entries silently: the scoring core refuses them."""
    path = tmp_path / "p.json"
    one = '{"type": "Multiple points", "points": []}'
    path.write_text(f'{{"001.tiff": {one}, "002.tiff": {one}, "001.tiff": {one}}}')
    with pytest.raises(FormatError, match="key '001.tiff' is given twice"):
        read_predictions(path)


def test_a_csv_field_over_the_csv_limit_is_a_format_error(tmp_path: Path) -> None:
    """U14: the csv module's field limit ends in a one-line refusal, never a traceback."""
    path = tmp_path / "p.csv"
    path.write_text("image,x,y,unit\n" + "001.tiff," + "1" * 200_000 + ",1,mm\n")
    with pytest.raises(FormatError, match="malformed CSV: field larger than field limit"):
        read_predictions(path)
