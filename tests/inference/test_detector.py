"""The runtime's detector on hand-made images: every disc found once, at the right place, whatever the
output kind, across tile borders and overlaps, and at another pixel spacing."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from worker.inference.detector import Detector, ModelOutputError
from worker.reference.export import write_archive

from .conftest import disc_image, make_manifest

# Tile 64, overlap 16: tiles start every 48 px and the core borders lie at 56, 104, 152 (x and y).
CENTRES = [(20.0, 20.0), (56.0, 30.0), (104.0, 104.0), (50.0, 100.0), (150.0, 56.5), (180.0, 130.0), (6.0, 140.0)]


def _match(found: np.ndarray, expected: list[tuple[float, float]], tol: float) -> None:
    assert len(found) == len(expected), f"found {found.tolist()}, expected {expected}"
    for cx, cy in expected:
        d = np.hypot(found[:, 0] - cx, found[:, 1] - cy)
        assert d.min() <= tol, f"no detection within {tol} px of {(cx, cy)}: {found.tolist()}"


@pytest.mark.parametrize("kind", ["heatmap", "points", "boxes"])
def test_each_disc_is_found_once_across_tile_borders(toy_archive, kind: str) -> None:
    archive = toy_archive(kind)
    detector = Detector(archive, device=torch.device("cpu"))
    image = torch.from_numpy(disc_image(200, 150, CENTRES)).permute(2, 0, 1)
    found = detector.detect(image, spacing_mm=0.00025)
    tol = 3.0 if kind == "heatmap" else 1.0  # heatmap peaks sit on stride-4 cell centres: up to 1.5 px off per axis
    _match(found.xy_px, CENTRES, tol)
    assert np.all(np.diff(found.scores) <= 0), "detections are sorted by descending score"
    assert np.all((found.scores > 0.3) & (found.scores <= 1.0))


def test_a_disc_seen_by_four_tiles_is_reported_once(toy_archive) -> None:
    # (52, 52) lies in the overlap of the four tiles starting at (0|48, 0|48).
    archive = toy_archive("points")
    detector = Detector(archive, device=torch.device("cpu"))
    found = detector.detect(torch.from_numpy(disc_image(112, 112, [(52.0, 52.0)])).permute(2, 0, 1), 0.00025)
    _match(found.xy_px, [(52.0, 52.0)], 1.0)


@pytest.mark.parametrize("kind", ["points", "boxes"])
def test_a_figure_pulled_inwards_by_both_tiles_on_a_core_border_is_kept_once(toy_archive, kind: str) -> None:
    # (56, 30) sits on the core border x = 56: the left tile reports it at x = 54, the right one at x = 58,
    # each outside its own core; the widened cores keep both reports and the global NMS keeps one.
    archive = toy_archive(kind, inward=2.0)
    detector = Detector(archive, device=torch.device("cpu"))
    found = detector.detect(torch.from_numpy(disc_image(112, 64, [(56.0, 30.0)])).permute(2, 0, 1), 0.00025)
    _match(found.xy_px, [(56.0, 30.0)], 4.0)  # pulled by 2 px along both axes, plus a 1 px plateau tie


def test_image_smaller_than_one_tile(toy_archive) -> None:
    detector = Detector(toy_archive("heatmap"), device=torch.device("cpu"))
    found = detector.detect(torch.from_numpy(disc_image(40, 30, [(20.0, 15.0)])).permute(2, 0, 1), 0.00025)
    _match(found.xy_px, [(20.0, 15.0)], 3.0)


def test_empty_image_gives_no_detections(toy_archive) -> None:
    detector = Detector(toy_archive("boxes"), device=torch.device("cpu"))
    found = detector.detect(torch.from_numpy(disc_image(130, 90, [])).permute(2, 0, 1), 0.00025)
    assert found.xy_px.shape == (0, 2)
    assert found.scores.shape == (0,)


def test_images_at_another_spacing_are_resampled_and_mapped_back(toy_archive) -> None:
    # The model expects 0.5 um/px; the image has 0.25 um/px, so it is shrunk by 2 before tiling and the
    # detections must still come back in the original image's pixels.
    archive = toy_archive("points", spacing=0.0005)
    detector = Detector(archive, device=torch.device("cpu"))
    centres = [(40.0, 40.0), (200.0, 120.0), (300.0, 250.0)]
    image = torch.from_numpy(disc_image(360, 300, centres, radius=10.0)).permute(2, 0, 1)
    found = detector.detect(image, spacing_mm=0.00025)
    _match(found.xy_px, centres, 2.5)
    # Same spacing as expected: no resampling, same answer to the pixel.
    same = detector.detect(torch.from_numpy(disc_image(180, 150, [(90.0, 60.0)])).permute(2, 0, 1), 0.0005)
    _match(same.xy_px, [(90.0, 60.0)], 1.0)


def test_bf16_is_used_only_on_cuda(toy_archive) -> None:
    detector = Detector(toy_archive("heatmap"), device=torch.device("cpu"))
    assert detector.manifest.bf16 is True
    assert detector.bf16 is False


class _WrongShape(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x[:, :, ::2, ::2]


def test_model_output_that_contradicts_the_manifest_is_one_clear_error(tmp_path) -> None:
    archive = write_archive(tmp_path / "bad", _WrongShape(), make_manifest("heatmap"))
    detector = Detector(archive, device=torch.device("cpu"))
    with pytest.raises(ModelOutputError, match=r"does not match tile_size/stride = 16") as info:
        detector.detect(torch.zeros(3, 64, 64, dtype=torch.uint8), 0.00025)
    assert "\n" not in str(info.value)


def test_normalisation_is_applied_as_declared(tmp_path) -> None:
    class Echo(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x

    from worker.archives.manifest import InputSpec

    m = make_manifest("heatmap", tile=32, overlap=0, stride=1)
    manifest = type(m)(
        model="model.pt",
        input=InputSpec(32, 0, None, "0-255", (10.0, 20.0, 30.0), (2.0, 4.0, 5.0)),
        output=m.output,
    )
    detector = Detector(write_archive(tmp_path / "echo", Echo(), manifest), device=torch.device("cpu"))
    tiles = torch.full((1, 3, 32, 32), 50, dtype=torch.uint8)
    x = detector.prepare(tiles)
    assert torch.allclose(x[0, :, 0, 0], torch.tensor([20.0, 7.5, 4.0]))
    assert math.isclose(float(x[0, 0].std()), 0.0)
