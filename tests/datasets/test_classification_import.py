"""`dataset import --task classification`: the MIDOG 2025 atypical CSV and the AMi-Br CSV cut into stacks of
patches centred on the figures (small synthetic TIFFs with marked pixels), domain mapping, scanners, an official
Track 2 ground truth with its stacks, and one-line errors for malformed input."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tifffile
from typer.testing import CliRunner

from app.cli import cli
from worker.datasets.atypical import read_amibr_csv, read_midog25_csv
from worker.datasets.errors import DatasetError
from worker.datasets.manifest import Manifest, TestSet
from worker.datasets.stacks import (
    cut_patch,
    domain_mapping,
    patch_origin,
    read_classification_truth,
    read_stack,
    split_sizes,
    stack_page_count,
)
from worker.datasets.synth_classification import generate_classification_set
from worker.evaluation.classification import read_ground_truth

MARK = (255, 0, 255)  # the pixel of each figure's centre
HEADER = "image_id,filename,coordinateX,coordinateY,Tumor,Scanner,Origin,Species,expert1,expert2,expert3,majority"
AMIBR_HEADER = (
    ",slide,dataset,uid,x,y,expert1_label,expert2_label,expert1_atypical,expert2_atypical,expert3_atypical,"
    "majority_atypical"
)
SIZES = {"201.tiff": (300, 200), "202.tiff": (160, 120), "203.tiff": (400, 300)}


def _coded(width: int, height: int) -> np.ndarray:
    """Every pixel says where it is: R = x mod 251, G = y mod 251, B = 77."""
    yy, xx = np.mgrid[:height, :width]
    return np.stack([xx % 251, yy % 251, np.full_like(xx, 77)], axis=2).astype(np.uint8)


def _write_tiff(path: Path, rgb: np.ndarray, um: float = 0.25) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    px_per_cm = 1e4 / um
    tifffile.imwrite(path, rgb, photometric="rgb", resolution=(px_per_cm, px_per_cm), resolutionunit="CENTIMETER")


def _figures() -> list[tuple[str, int, int, str, str, str]]:
    """(filename, x, y, tumour, scanner, majority) in file order."""
    rows = [
        ("201.tiff", 150, 100, "canine lung cancer", "3D Histech", "NMF"),
        ("201.tiff", 5, 3, "canine lung cancer", "3D Histech", "AMF"),  # near the corner: padded with white
        ("201.tiff", 298, 199, "canine lung cancer", "3D Histech", "NMF"),  # the last pixel
        ("202.tiff", 80, 60, "human breast cancer", "Hamammatsu XR", "AMF"),  # MIDOG++'s spelling
        ("202.tiff", 20, 100, "human breast cancer", "Hamammatsu XR", "NMF"),
    ]
    rng = np.random.default_rng(0)
    for i in range(18):  # one image with 18 figures: two stacks of 9
        x, y = int(rng.integers(20, 380)), int(rng.integers(20, 280))
        rows.append(("203.tiff", x, y, "canine lymphoma", "Aperio CS2", "AMF" if i % 3 == 0 else "NMF"))
    return rows


def _csv(rows: list[tuple[str, int, int, str, str, str]]) -> str:
    lines = [HEADER]
    for i, (name, x, y, tumor, scanner, label) in enumerate(rows):
        lines.append(f"{i + 1}.png,{name},{x},{y},{tumor},{scanner},Vienna,Canine,{label},{label},,{label}")
    return "\n".join(lines) + "\n"


@pytest.fixture
def source(tmp_path: Path) -> Path:
    src = tmp_path / "src"
    figures = _figures()
    for name, (w, h) in SIZES.items():
        rgb = _coded(w, h)
        for fname, x, y, *_ in figures:
            if fname == name:
                rgb[y, x] = MARK
        _write_tiff(src / "images" / name, rgb)
    (src / "atypical.csv").write_text(_csv(figures))
    return src


def _invoke(*args: str) -> Any:
    return CliRunner().invoke(cli, ["dataset", *args])


def test_patch_geometry_helpers() -> None:
    assert patch_origin(150, 128) == 86  # the figure lands on pixel 64 of 128
    assert patch_origin(149.5, 128) == 86  # rounded half up
    assert patch_origin(149.49, 128) == 85
    assert patch_origin(10, 33) == -6
    image = _coded(50, 40)
    patch = cut_patch(image, 2, 1, 8)
    assert patch.shape == (8, 8, 3)
    assert tuple(patch[4, 4]) == (2, 1, 77)
    assert (patch[:3] == 255).all()  # rows above the image: white
    assert (patch[:, :2] == 255).all()
    assert split_sizes(18) == [9, 9]
    assert split_sizes(17) == [9, 8]
    assert split_sizes(16) == [16]
    assert split_sizes(33) == [11, 11, 11]
    assert split_sizes(5, 2) == [2, 2, 1]
    assert domain_mapping(["b", "a", "c", "a"]) == {"a": 0, "b": 1, "c": 2}


def test_midog2025_csv_import(source: Path, tmp_path: Path) -> None:
    out = tmp_path / "set"
    result = _invoke(
        "import", "--atypical-csv", str(source / "atypical.csv"), "--images", str(source / "images"),
        "--out", str(out), "--patch-size", "32", "--workers", "1",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "wrote 4 stacks (23 patches)" in result.output
    obj = json.loads((out / "manifest.json").read_text())
    manifest = Manifest.from_json(obj)
    assert manifest.task == "classification"
    assert obj["source"]["tumor_domains"] == {"canine lung cancer": 0, "canine lymphoma": 1, "human breast cancer": 2}
    assert obj["source"]["kind"] == "midog2025-atypical"
    truth = read_ground_truth(out / "ground-truth" / "ground-truth.json")  # the scoring core's reader
    assert list(truth) == ["stack_1.tiff", "stack_2.tiff", "stack_3.tiff", "stack_4.tiff"]
    assert [c.patches for c in manifest.cases] == [3, 2, 9, 9]
    assert [c.scanner for c in manifest.cases] == ["3D Histech", "Hamamatsu XR", "Aperio CS2", "Aperio CS2"]
    assert [c.groups["tumor domain"] for c in manifest.cases] == ["0", "2", "1", "1"]
    test_set = TestSet.open(out)
    figures = _figures()
    page = 0
    for case in manifest.cases:
        assert (case.width, case.height) == (32, 32)
        assert case.spacing_mm == pytest.approx(0.00025)
        path = test_set.image_path(case)
        stack = read_stack(path)
        assert len(stack) == stack_page_count(path) == case.patches == len(truth[case.name].labels)
        for i, patch in enumerate(stack):
            name, x, y, tumor, _, label = figures[page]
            page += 1
            assert tuple(patch[16, 16]) == MARK  # centred on the figure
            if x + 1 < SIZES[name][0]:
                assert tuple(patch[16, 17]) == ((x + 1) % 251, y % 251, 77)
            assert truth[case.name].labels[i] == (1 if label == "AMF" else 0)
            assert truth[case.name].domains[i] == {"canine lung cancer": 0, "canine lymphoma": 1}.get(tumor, 2)
    corner = read_stack(out / "images" / "stack_1.tiff")[1]  # the figure at (5, 3)
    assert (corner[:13] == 255).all()
    assert (corner[:, :11] == 255).all()
    assert tuple(corner[13, 11]) == (0, 0, 77)
    last = read_stack(out / "images" / "stack_1.tiff")[2]  # the figure at the last pixel (298, 199)
    assert (last[17:] == 255).all()
    rows = (out / "ground-truth" / "patches.csv").read_text().splitlines()
    assert rows[0] == "stack,page,image,x,y,label,tumor,tumor_domain,scanner,id,line"
    assert rows[2] == "stack_1.tiff,1,201.tiff,5,3,atypical,canine lung cancer,0,3D Histech,2.png,3"
    info = _invoke("info", str(out))
    assert "4 stacks, 23 patches, 3 scanners, 3 tumour domains, 8 atypical (34.8%)" in info.output
    assert "atypical" not in json.dumps(obj["cases"])


def test_default_patch_size_and_worker_count_do_not_change_the_bytes(source: Path, tmp_path: Path) -> None:
    hashes = []
    for workers in ("1", "2"):
        out = tmp_path / f"w{workers}"
        result = _invoke(
            "import", "--atypical-csv", str(source / "atypical.csv"), "--images", str(source / "images"),
            "--out", str(out), "--workers", workers, "--patches", "5",
        )  # fmt: skip
        assert result.exit_code == 0, result.output
        cases = TestSet.open(out).cases
        assert [c.patches for c in cases] == [3, 2, 5, 5, 4, 4]  # 18 figures, at most 5 a stack
        assert (cases[0].width, cases[0].height) == (128, 128)
        hashes.append([c.sha256 for c in cases])
    assert hashes[0] == hashes[1]


def _amibr(tmp_path: Path, rows: list[str] | None = None) -> tuple[Path, Path]:
    images = tmp_path / "amibr-images"
    for name, size in (("002.tiff", (120, 100)), ("TUPAC16/42.tif", (100, 90))):
        rgb = _coded(*size)
        rgb[50, 60] = MARK
        _write_tiff(images / name, rgb, um=0.2273)
    rows = rows or [
        "0,002.tiff,MIDOG21,6,60,50,NMF prometaphase,NMF metaphase,False,False,False,False",
        "1,002.tiff,MIDOG21,7,61,50,AMF segregation,AMF segregation,True,True,True,True",
        "2,42.tif,TUPAC16,4176,60,50,NMF metaphase,AMF segregation,False,True,True,1",
    ]
    path = tmp_path / "AMi-Br.csv"
    path.write_text("\n".join([AMIBR_HEADER, *rows]) + "\n")
    return path, images


def test_amibr_csv_import(tmp_path: Path) -> None:
    csv_path, images = _amibr(tmp_path)
    out = tmp_path / "set"
    args = ["import", "--amibr-csv", str(csv_path), "--images", str(images), "--patch-size", "16", "--workers", "1"]
    no_scanner = _invoke(*args, "--out", str(out), "--scanner-map", "midog2021")
    assert no_scanner.exit_code == 2
    # MIDOG21's 002.tiff has a scanner; TUPAC16's 42.tif is not MIDOG's 042.tiff
    assert "AMi-Br.csv: no scanner known for 42.tif (TUPAC16) (line 4)" in no_scanner.stderr
    result = _invoke(*args, "--out", str(out), "--default-scanner", "Aperio ScanScope XT")
    assert result.exit_code == 0, result.output
    test_set = TestSet.open(out)
    assert [c.scanner for c in test_set.cases] == ["Hamamatsu XR", "Aperio ScanScope XT"]
    assert [c.patches for c in test_set.cases] == [2, 1]
    assert test_set.manifest.source["tumor_domains"] == {"human breast cancer": 0}
    truth = read_ground_truth(test_set.ground_truth_path)
    assert truth["stack_1.tiff"].labels.tolist() == [0, 1]
    assert truth["stack_2.tiff"].labels.tolist() == [1]
    assert all(c.groups == {"scanner": c.scanner, "tumor domain": "0"} for c in test_set.cases)
    first = read_stack(out / "images" / "stack_1.tiff")
    assert tuple(first[0, 8, 8]) == MARK
    assert tuple(first[1, 8, 7]) == MARK  # the second figure is one pixel to the right of the mark
    assert tuple(read_stack(out / "images" / "stack_2.tiff")[0, 8, 8]) == MARK
    assert test_set.cases[0].spacing_mm == pytest.approx(0.0002273)
    rows = (out / "ground-truth" / "patches.csv").read_text().splitlines()
    assert rows[0] == "stack,page,image,x,y,label,tumor,tumor_domain,scanner,dataset,id,line"
    assert rows[3].startswith("stack_2.tiff,0,42.tif,60,50,atypical,human breast cancer,0,Aperio ScanScope XT,TUPAC16")


def test_amibr_column_names_are_read_defensively(tmp_path: Path) -> None:
    path = tmp_path / "amibr.csv"
    path.write_text("Slide;Dataset;UID;X;Y;Majority_Atypical\n002.tiff;MIDOG21;1;3;4;true\n")
    table = read_amibr_csv(path)
    assert table.figures[0].image == "002.tiff"
    assert (table.figures[0].x, table.figures[0].y, table.figures[0].label) == (3.0, 4.0, "atypical")
    path.write_text("slide,uid,y,label\n002.tiff,1,4,True\n")
    with pytest.raises(DatasetError, match=r"amibr.csv: missing column\(s\) x, majority_atypical \(found: slide, uid"):
        read_amibr_csv(path)


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda t: t.replace(",majority\n", ",verdict\n", 1), "atypical.csv: missing column(s) majority (found: "),
        (lambda t: "a,b\n1,2\n", "atypical.csv: missing column(s) filename, coordinateX, coordinateY, Tumor"),
        (lambda t: t.replace(",150,100,", ",abc,100,", 1), "atypical.csv: line 2: coordinateX: expected a number"),
        (lambda t: t.replace(",150,100,", ",150,nan,", 1), "atypical.csv: line 2: coordinateY: expected a finite"),
        (lambda t: t.replace(",NMF,NMF,,NMF\n", ",NMF,NMF,,XMF\n", 1), "line 2: majority: expected AMF (atypical)"),
        (lambda t: t.replace(",NMF,NMF,,NMF\n", ",NMF\n", 1), "atypical.csv: line 2: majority: missing"),
        (lambda t: t.replace("canine lung cancer", "", 1), "atypical.csv: line 2: Tumor: empty"),
        (lambda t: t.replace(",150,100,", ",1500,100,", 1), "atypical.csv: line 2: (1500, 100) lies outside 201.tiff"),
        (lambda t: t.replace("202.tiff", "999.tiff", 1), "atypical.csv: line 5: 999.tiff: no such image"),
        (lambda t: t.replace("202.tiff", "../202.tiff", 1), "line 5: filename: expected a plain image file name"),
        (lambda t: t.split("\n", 1)[0] + "\n", "atypical.csv: no figures (only a header)"),
        (lambda t: "", "atypical.csv: empty file"),
    ],
)
def test_a_malformed_csv_gives_one_line_naming_the_line_and_column(
    source: Path, tmp_path: Path, edit: Any, message: str
) -> None:
    path = source / "atypical.csv"
    path.write_text(edit(path.read_text()))
    result = _invoke(
        "import", "--atypical-csv", str(path), "--images", str(source / "images"), "--out", str(tmp_path / "set"),
        "--patch-size", "16", "--workers", "1",
    )  # fmt: skip
    assert result.exit_code == 2, result.output
    assert result.stderr.count("\n") == 1
    assert message in result.stderr
    assert not (tmp_path / "set").exists()  # checked before anything is written


def test_amibr_label_errors(tmp_path: Path) -> None:
    csv_path, images = _amibr(tmp_path, ["0,002.tiff,MIDOG21,6,60,50,a,b,False,False,False,maybe"])
    result = _invoke("import", "--amibr-csv", str(csv_path), "--images", str(images), "--out", str(tmp_path / "o"))
    assert result.exit_code == 2
    assert "AMi-Br.csv: line 2: majority_atypical: expected True or False (or 1 / 0), got 'maybe'" in result.stderr


def test_the_csv_readers_take_the_real_layouts(source: Path) -> None:
    table = read_midog25_csv(source / "atypical.csv")
    assert len(table.figures) == 23
    first = table.figures[1]
    assert (first.image, first.x, first.y, first.label, first.tumor, first.scanner, first.id, first.line) == (
        "201.tiff", 5.0, 3.0, "atypical", "canine lung cancer", "3D Histech", "2.png", 3,
    )  # fmt: skip
    assert table.figures[3].scanner == "Hamamatsu XR"


def test_cli_task_rules(source: Path, tmp_path: Path) -> None:
    csv_args = ["--atypical-csv", str(source / "atypical.csv"), "--images", str(source / "images")]
    wrong_task = _invoke("import", *csv_args, "--out", str(tmp_path / "a"), "--task", "detection")
    assert wrong_task.exit_code == 2
    assert "use --task classification" in wrong_task.stderr
    link = _invoke("import", *csv_args, "--out", str(tmp_path / "b"), "--link", "symlink")
    assert link.exit_code == 2
    assert "--link: the patches are cut from the images" in link.stderr
    two = _invoke("import", *csv_args, "--amibr-csv", "x.csv", "--out", str(tmp_path / "c"))
    assert two.exit_code == 2
    assert "give exactly one of --midog-json, --ground-truth, --atypical-csv and --amibr-csv" in two.stderr
    midog = _invoke("import", "--midog-json", "M.json", "--images", ".", "--out", str(tmp_path / "d"), "--task",
                    "classification")  # fmt: skip
    assert midog.exit_code == 2
    assert "--midog-json is a detection source" in midog.stderr
    size = _invoke("import", "--midog-json", "M.json", "--images", ".", "--out", str(tmp_path / "e"), "--patch-size",
                   "64")  # fmt: skip
    assert size.exit_code == 2
    assert "--patch-size: not an option of --task detection" in size.stderr


def test_official_track2_ground_truth_with_its_stacks(tmp_path: Path) -> None:
    made = generate_classification_set(
        tmp_path / "made", scanners=1, domains=2, stacks_per_domain=2, max_patches=4, patch_size=32, seed=1
    )
    gt = made.ground_truth_path
    out = tmp_path / "set"
    result = _invoke(
        "import", "--task", "classification", "--ground-truth", str(gt), "--images", str(made.root / "images"),
        "--out", str(out), "--default-scanner", "GT450",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    test_set = TestSet.open(out)
    assert read_classification_truth(test_set.ground_truth_path) == read_classification_truth(gt)
    assert [c.sha256 for c in test_set.cases] == [c.sha256 for c in made.cases]
    assert [c.patches for c in test_set.cases] == [c.patches for c in made.cases]
    assert [c.groups for c in test_set.cases] == [{**c.groups, "scanner": "GT450"} for c in made.cases]
    entries = json.loads(gt.read_text())
    entries[1]["labels"].append("normal")
    entries[1]["tumordomains"].append(0)
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(entries))
    n = len(entries[1]["labels"])
    result = _invoke(
        "import", "--task", "classification", "--ground-truth", str(bad), "--images", str(made.root / "images"),
        "--out", str(tmp_path / "bad"), "--default-scanner", "GT450",
    )  # fmt: skip
    assert result.exit_code == 2
    assert f"bad.json[1] (stack_2.tiff): {n} labels for {n - 1} pages" in result.stderr
