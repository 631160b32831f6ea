"""Client pieces that need no server: what kind a file is, the private config file, server errors as one line."""

from __future__ import annotations

import io
import json
import stat
import tarfile
import zipfile
from pathlib import Path

import httpx
import pytest

from app.cli import client
from app.settings import ClientSettings


def test_guess_kind(tmp_path: Path) -> None:
    (tmp_path / "p.json").write_text("{}")
    (tmp_path / "p.csv").write_text("image,x,y,probability\n")
    assert client.guess_kind(tmp_path / "p.json") == "predictions"
    assert client.guess_kind(tmp_path / "p.csv") == "predictions"
    with zipfile.ZipFile(tmp_path / "model.zip", "w") as z:
        z.writestr("manifest.json", "{}")
    assert client.guess_kind(tmp_path / "model.zip") == "model"
    for name, member in (("image.tar", "manifest.json"), ("oci.tar", "oci-layout"), ("archive.tar", "model.pt")):
        with tarfile.open(tmp_path / name, "w") as tar:
            info = tarfile.TarInfo(member)
            info.size = 2
            tar.addfile(info, io.BytesIO(b"{}"))
    assert client.guess_kind(tmp_path / "image.tar") == "container"
    assert client.guess_kind(tmp_path / "oci.tar") == "container"
    assert client.guess_kind(tmp_path / "archive.tar") == "model"


def test_config_is_private_and_overridable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    monkeypatch.setattr(client, "settings", ClientSettings(server="", token=""))
    assert client.server_url(None) == client.DEFAULT_SERVER
    path = client.save_config({"server": "https://c.example.org/", "token": "mdg_secret"})
    assert path == tmp_path / "midog-eval" / "config.json"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert json.loads(path.read_text())["token"] == "mdg_secret"
    assert client.server_url(None) == "https://c.example.org"
    assert client.token() == "mdg_secret"
    monkeypatch.setenv("MIDOG_TOKEN", "mdg_env")  # the environment (or .env) as a new process reads it
    monkeypatch.setattr(client, "settings", ClientSettings())
    assert client.token() == "mdg_env"
    assert client.server_url("http://other:9000/") == "http://other:9000"


def test_server_errors_become_one_line() -> None:
    quota = httpx.Response(429, json={"error": "quota_exceeded", "detail": "daily quota used", "reset_at": "T"})
    with pytest.raises(client.ClientError, match=r"^429: daily quota used \(resets at T\)$"):
        client.check(quota)
    with pytest.raises(client.ClientError, match="midog-eval login"):
        client.check(httpx.Response(401, json={"error": "unauthorized", "detail": "invalid token"}))
    with pytest.raises(client.ClientError, match="^502: bad gateway"):
        client.check(httpx.Response(502, text="bad gateway"))
    assert client.check(httpx.Response(200, json={"ok": 1})) == {"ok": 1}


def test_a_classification_result_is_shown_per_domain_with_balanced_accuracy_and_roc_auc() -> None:
    from rich.console import Console

    result = {
        "task": "classification",
        "tp": 5,
        "fp": 2,
        "fn": 1,
        "balanced_accuracy": 0.8125,
        "roc_auc": 0.9042,
        "intervals": {"balanced_accuracy": [0.7, 0.9]},
        "groups": {
            "human breast": {"tp": 3, "fp": 1, "fn": 0, "tn": 9, "sensitivity": 1.0, "specificity": 0.9,
                             "balanced_accuracy": 0.95, "roc_auc": 0.97},
        },
    }  # fmt: skip
    out = Console(width=200, record=True)
    out.print(client.result_table(result))
    text = out.export_text()
    assert "balanced acc." in text
    assert "ROC AUC" in text
    assert "0.950" in text
    assert "0.970" in text
    assert "0.812 [0.700, 0.900]" in text
    assert "AP" not in text
    assert client.headline(result) == "bal. acc. 0.812"
    assert client.headline({"task": "detection", "f1": 0.5}) == "F1 0.500"


def test_submit_arguments_for_images_and_model_tarballs(tmp_path: Path) -> None:
    image = tmp_path / "image.tar.gz"
    image.write_bytes(b"\x1f\x8b")
    model = tmp_path / "model.tar.gz"
    model.write_bytes(b"\x1f\x8b")
    choice = client.container_choice
    assert client.guess_kind(image) == "container"
    assert choice(image, kind=None, model=model, image=None, run_mode=None) == "container"
    assert choice(None, kind=None, model=model, image=7, run_mode="invoke") == "container"
    predictions = tmp_path / "p.json"
    predictions.write_text("{}")
    refusals: list[tuple[Path | None, str | None, Path | None, int | None, str | None, str]] = [
        (None, None, None, None, None, "give the file to submit"),
        (None, None, None, 7, None, "add --model"),
        (image, None, model, 7, None, "not both"),
        (image, None, None, None, "serve", "--run-mode: exec or invoke"),
        (predictions, "predictions", model, None, None, "go with container"),
    ]
    for file, kind, with_model, earlier, mode, line in refusals:
        with pytest.raises(client.ClientError, match=line):
            choice(file, kind=kind, model=with_model, image=earlier, run_mode=mode)


def test_a_failure_line_is_printed_as_written_without_markup(monkeypatch: pytest.MonkeyPatch) -> None:
    from rich.console import Console

    out = io.StringIO()
    monkeypatch.setattr(client, "console", Console(file=out, width=200, color_system=None))
    line = "case 001: ModuleNotFoundError: No module named 'timm' [bold]"
    client.print_submission(
        {
            "id": 7,
            "kind": "container",
            "original_filename": "image.tar.gz",
            "evaluation": {"status": "failed", "error_message": line},
        }
    )
    printed = out.getvalue()
    assert line in printed
    assert "[red]" not in printed


def _board_text(task: str, group_metric: str, entry: dict) -> str:
    from rich.console import Console

    board = {
        "challenge_slug": "c", "phase_slug": "p", "phase_title": "P", "group_labels": ["A", "B"],
        "task": task, "group_metric": group_metric, "entries": [entry],
    }  # fmt: skip
    console = Console(file=io.StringIO(), width=200)
    console.print(client.leaderboard_table(board))
    return console.file.getvalue()  # type: ignore[attr-defined]


def test_a_track2_board_shows_balanced_accuracy_not_detection_columns() -> None:
    entry = {
        "is_baseline": False, "rank": 1, "team_name": "T", "method_name": "m", "rank_robustness": 1.0,
        "balanced_accuracy": 0.507, "balanced_accuracy_ci_low": 0.425, "balanced_accuracy_ci_high": 0.593,
        "f1": 0.335, "groups": {"A": {"balanced_accuracy": 0.477, "f1": 0.314}, "B": {"balanced_accuracy": 0.622}},
    }  # fmt: skip
    text = _board_text("classification", "balanced_accuracy", entry)
    assert all(shown in text for shown in ("bal. acc. [95% CI]", "0.507", "0.477", "0.622"))
    assert not any(hidden in text for hidden in ("F1", "AP", "0.335"))
    detection = {**entry, "f1": 0.61, "f1_ci_low": 0.5, "f1_ci_high": 0.7, "ap": 0.55,
                 "groups": {"A": {"f1": 0.6}, "B": {"f1": 0.62}}}  # fmt: skip
    text = _board_text("detection", "f1", detection)
    assert all(shown in text for shown in ("F1 [95% CI]", "AP", "0.550", "0.600"))
