"""`midog-eval archive check|pack`: the upload checks from the command line, never loading the model."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from typer.testing import CliRunner

from app.cli import cli

REFERENCE = Path(__file__).resolve().parents[2] / "worker" / "reference" / "archives"


def test_check_accepts_the_reference_archive_and_names_its_settings() -> None:
    result = CliRunner().invoke(cli, ["archive", "check", str(REFERENCE / "cnn")])
    assert result.exit_code == 0, result.output
    assert result.output.startswith("valid: reference-cnn: model model.pt; tiles 512 px, overlap 64")


def test_pack_then_check_the_zip(tmp_path: Path) -> None:
    out = tmp_path / "cnn.zip"
    result = CliRunner().invoke(cli, ["archive", "pack", str(REFERENCE / "classical"), "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert CliRunner().invoke(cli, ["archive", "check", str(out)]).exit_code == 0


def test_invalid_archive_is_one_line_and_exit_2(tmp_path: Path) -> None:
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "manifest.json").write_text(json.dumps({"format_version": 1, "model": "m.pt"}))
    result = CliRunner().invoke(cli, ["archive", "check", str(bad)])
    assert result.exit_code == 2
    assert result.output.strip() == "invalid: manifest.json: input: is required"
    packed = CliRunner().invoke(cli, ["archive", "pack", str(bad), "-o", str(tmp_path / "bad.zip")])
    assert packed.exit_code == 2
    assert not (tmp_path / "bad.zip").exists()


def test_checking_never_imports_torch() -> None:
    code = (
        "import sys; from app.cli import archive; "
        f"archive.validate_archive(__import__('pathlib').Path({str(REFERENCE / 'cnn')!r})); "
        "print('torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
