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
