"""The asset hub: verified downloads from a local HTTP server, offline errors, `models add/fetch/list`.

Downloads are served from 127.0.0.1 in a thread; nothing touches the network.
"""

from __future__ import annotations

import hashlib
import http.server
import os
import threading
from dataclasses import replace
from pathlib import Path

import pytest

from affectlab.cli import main
from affectlab.runtime import assets as hub
from affectlab.runtime.assets import (
    ASSETS,
    Asset,
    AssetError,
    AssetMissingError,
    add_files,
    affectlab_home,
    asset_file,
    asset_path,
    asset_status,
    fetch,
    get_asset,
)

from conftest import SHARED_MODELS

PAYLOAD = os.urandom(200_000)


class Server:
    """Serves ``files[name]`` at ``/name``; ``mode`` 'ok', 'cut' (half the body, then the connection drops)."""

    def __init__(self):
        self.files: dict[str, bytes] = {}
        self.mode = "ok"
        self.hits = 0
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                outer.hits += 1
                data = outer.files.get(self.path.lstrip("/"))
                if data is None:
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if outer.mode == "cut":
                    self.wfile.write(data[: len(data) // 2])
                    self.wfile.flush()
                    self.close_connection = True
                    return
                self.wfile.write(data)

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server():
    s = Server()
    yield s
    s.close()


@pytest.fixture
def fake(server, monkeypatch):
    """A registered test asset served by ``server``; downloads allowed."""
    asset = Asset(
        name="test-blob", filename="blob.bin", url=f"{server.url}/blob.bin",
        sha256=hashlib.sha256(PAYLOAD).hexdigest(), size=len(PAYLOAD), license="CC0-1.0",
        homepage="https://example.invalid", description="test payload",
    )
    monkeypatch.setitem(ASSETS, asset.name, asset)
    server.files["blob.bin"] = PAYLOAD
    monkeypatch.delenv("AFFECTLAB_OFFLINE")
    return asset


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def test_offline_error_is_one_line_with_name_url_and_command(fake, server, monkeypatch):
    monkeypatch.setenv("AFFECTLAB_OFFLINE", "1")
    with pytest.raises(AssetMissingError) as info:
        asset_path("test-blob")
    msg = str(info.value)
    assert "\n" not in msg
    assert "'test-blob'" in msg and fake.url in msg and "affectlab models add blob.bin" in msg
    assert info.value.asset == "test-blob" and info.value.url == fake.url
    assert server.hits == 0


def test_download_false_never_touches_the_network(fake, server):
    with pytest.raises(AssetMissingError, match="not allowed"):
        asset_path("test-blob", download=False)
    assert server.hits == 0
    assert asset_status("test-blob") == "missing"


def test_download_is_verified_and_then_reused(fake, server):
    path = asset_path("test-blob", progress=False)
    assert path == affectlab_home() / "assets" / "blob.bin"
    assert path.read_bytes() == PAYLOAD
    assert leftovers(path.parent) == ["blob.bin"]  # no temporary file left beside it
    assert asset_status("test-blob") == "present"
    assert asset_path("test-blob") == path
    assert server.hits == 1


def test_wrong_hash_download_is_refused_and_deleted(fake, server):
    server.files["blob.bin"] = PAYLOAD[:-1] + bytes([PAYLOAD[-1] ^ 1])  # same size, one bit off
    with pytest.raises(AssetMissingError, match="sha256 did not match") as info:
        asset_path("test-blob", progress=False)
    assert "affectlab models add blob.bin" in str(info.value)
    assert leftovers(affectlab_home() / "assets") == []


def test_interrupted_download_leaves_nothing(fake, server):
    server.mode = "cut"
    with pytest.raises(AssetMissingError, match="downloading it failed") as info:
        asset_path("test-blob", progress=False)
    assert "\n" not in str(info.value)
    assert leftovers(affectlab_home() / "assets") == []
    assert asset_status("test-blob") == "missing"
    server.mode = "ok"  # the next try succeeds
    assert asset_path("test-blob", progress=False).read_bytes() == PAYLOAD


def test_server_error_and_unreachable_host_say_the_url(fake, server, monkeypatch):
    del server.files["blob.bin"]
    with pytest.raises(AssetMissingError, match="404"):
        asset_path("test-blob", progress=False)
    monkeypatch.setitem(ASSETS, "test-blob", replace(fake, url="http://127.0.0.1:9/blob.bin"))
    with pytest.raises(AssetMissingError, match=r"127\.0\.0\.1:9/blob\.bin"):
        asset_path("test-blob", progress=False)
    assert leftovers(affectlab_home() / "assets") == []


def test_damaged_file_is_never_used(fake, server):
    path = asset_file("test-blob")
    path.parent.mkdir(parents=True)
    path.write_bytes(b"x" * len(PAYLOAD))
    assert asset_status("test-blob") == "damaged"
    with pytest.raises(AssetMissingError, match="damaged"):
        asset_path("test-blob", download=False)
    assert asset_path("test-blob", progress=False).read_bytes() == PAYLOAD  # replaced by a verified copy


def test_hash_is_computed_once_per_file_version(fake, server, monkeypatch):
    path = asset_path("test-blob", progress=False)
    calls = []
    real = hashlib.sha256
    monkeypatch.setattr(hub.hashlib, "sha256", lambda *a: calls.append(1) or real(*a))
    for _ in range(3):
        asset_path("test-blob")
    assert calls == []
    # same size, new content and mtime: noticed
    path.write_bytes(b"y" * len(PAYLOAD))
    os.utime(path, ns=(1, 1))
    assert asset_status("test-blob") == "damaged"
    assert len(calls) == 1


def test_unknown_asset_lists_the_known_ones():
    with pytest.raises(AssetError, match="unknown asset 'nope'.*yunet"):
        get_asset("nope")


def test_registry_entries_are_complete():
    for name in ("yunet", "face-landmarker", "mobilenet-v2-imagenet", "faceapi-expression", "faceapi-expression-manifest"):
        a = get_asset(name)
        assert a.url.startswith("https://") and a.url.endswith(a.filename)
        assert a.size > 0 and a.license and a.homepage
    assert get_asset("mobilenet-v2-imagenet").target == "torch-hub"


def test_registry_matches_the_shared_files():
    if not SHARED_MODELS.is_dir():
        pytest.skip(f"{SHARED_MODELS} absent")
    by_name = {p.name: p for p in SHARED_MODELS.rglob("*") if p.is_file()}
    for a in ASSETS.values():
        p = by_name[a.filename]
        assert p.stat().st_size == a.size, a.name
        assert hub.file_sha256(p) == a.sha256, a.name


def test_torch_hub_asset_lives_where_torchvision_looks(assets_home):
    import torch.hub
    import torchvision

    path = asset_path("mobilenet-v2-imagenet")
    assert path.parent == Path(torch.hub.get_dir()) / "checkpoints"
    assert path.parent == assets_home / "torch" / "hub" / "checkpoints"
    # offline (AFFECTLAB_OFFLINE=1 and no network in tests): torchvision finds the file itself
    model = torchvision.models.mobilenet_v2(weights="IMAGENET1K_V1")
    assert model.classifier[1].out_features == 1000


def test_assets_home_fixture_seeds_every_asset(assets_home):
    assert {n: asset_status(n) for n in ASSETS} == {n: "present" for n in ASSETS}


def test_add_files_known_unknown_and_damaged(fake, tmp_path):
    good = tmp_path / "downloaded-elsewhere.bin"
    good.write_bytes(PAYLOAD)
    [(dest, name)] = add_files([good])
    assert name == "test-blob" and dest == asset_file("test-blob") and dest.read_bytes() == PAYLOAD
    assert leftovers(dest.parent) == ["blob.bin"]

    dest.unlink()
    unknown = tmp_path / "notes.txt"
    unknown.write_text("hello")
    damaged = tmp_path / "blob.bin"
    damaged.write_bytes(PAYLOAD[:1000])
    with pytest.raises(AssetError) as info:
        add_files([good, unknown, damaged])
    msg = str(info.value)
    assert "\n" not in msg and "nothing added" in msg
    assert f"{unknown}: not a known asset" in msg and "face_detection_yunet_2023mar.onnx (yunet)" in msg
    assert f"{damaged}: damaged copy of asset 'test-blob'" in msg and f"{len(PAYLOAD)} B" in msg
    assert asset_status("test-blob") == "missing"  # refused as a whole: the good file was not copied either


def test_cli_add_fetch_and_list(fake, server, tmp_path, capsys, monkeypatch):
    good = tmp_path / "copy.bin"
    good.write_bytes(PAYLOAD)
    assert main(["models", "add", str(good)]) == 0
    assert "added test-blob" in capsys.readouterr().err
    assert main(["models", "list"]) == 0
    out = capsys.readouterr().out
    assert "test-blob" in out and "present" in out and "CC0-1.0" in out and "missing" in out

    bad = tmp_path / "notes.txt"
    bad.write_text("x")
    assert main(["models", "add", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "not a known asset" in err and "Traceback" not in err

    asset_file("test-blob").unlink()
    assert main(["models", "fetch", "test-blob", "-q"]) == 0
    assert asset_status("test-blob") == "present" and server.hits == 1

    assert main(["models", "fetch", "nope"]) == 2
    assert "unknown asset 'nope'" in capsys.readouterr().err

    monkeypatch.setenv("AFFECTLAB_OFFLINE", "1")
    assert main(["models", "fetch", "yunet"]) == 2
    err = capsys.readouterr().err
    assert "affectlab models add face_detection_yunet_2023mar.onnx" in err
    assert len(err.strip().splitlines()) == 1


def test_models_path_of_an_asset(assets_home, capsys, monkeypatch):
    assert main(["models", "path", "yunet"]) == 0
    assert capsys.readouterr().out.strip() == str(assets_home / "assets" / "face_detection_yunet_2023mar.onnx")
    monkeypatch.setenv("AFFECTLAB_HOME", str(assets_home / "empty"))
    monkeypatch.delenv("AFFECTLAB_OFFLINE")  # still never downloads
    assert main(["models", "path", "yunet"]) == 2
    assert "affectlab models add face_detection_yunet_2023mar.onnx" in capsys.readouterr().err


def test_fetch_real_asset_from_a_mirror(server, monkeypatch, capsys):
    # AFFECTLAB_ASSET_BASE_URL points every asset at a mirror: here the local server
    src = SHARED_MODELS / "face_detection_yunet_2023mar.onnx"
    if not src.is_file():
        pytest.skip(f"{src} absent")
    server.files[src.name] = src.read_bytes()
    monkeypatch.delenv("AFFECTLAB_OFFLINE")
    monkeypatch.setenv("AFFECTLAB_ASSET_BASE_URL", server.url + "/")
    [(name, path)] = fetch("yunet", progress=False)
    assert name == "yunet" and hub.file_sha256(path) == get_asset("yunet").sha256
    # every other asset is missing from the mirror: 'all' stops at the first with a one-line error
    with pytest.raises(AssetMissingError, match="404"):
        fetch("all", progress=False)


def test_every_test_starts_offline_in_an_empty_home():
    assert os.environ["AFFECTLAB_OFFLINE"] == "1"
    home = affectlab_home()
    assert not (home / "assets").exists()
    assert str(home) != str(Path.home() / ".cache" / "affectlab")
    from affectlab.runtime.hub import models_home

    assert models_home() == home / "models"


def test_models_add_help_has_examples(capsys):
    for cmd in ("add", "fetch"):
        assert main(["models", cmd, "--help"]) == 0
        assert "Example" in capsys.readouterr().out
