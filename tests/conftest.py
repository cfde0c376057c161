"""Settings shared by every test.

Every test runs with an empty temporary ``AFFECTLAB_HOME`` and ``TORCH_HOME`` and with
``AFFECTLAB_OFFLINE=1``, so no test downloads anything or reads the user's cache by accident.
A test that needs the pretrained files asks for ``assets_home``: a temporary home seeded from
``<repo>/../shared/models`` (skipped when that folder is absent).
"""

import os
from pathlib import Path

import pytest
import torch

#: ``<repo root>/../shared``: real faces and pretrained files for tests (never committed).
SHARED = Path(__file__).resolve().parents[1].parent / "shared"
SHARED_MODELS = SHARED / "models"

_ISOLATING_ENV = ("AFFECTLAB_HOME", "TORCH_HOME", "AFFECTLAB_OFFLINE", "AFFECTLAB_ASSET_BASE_URL")


@pytest.fixture(scope="session", autouse=True)
def one_torch_thread():
    # tiny models on a shared 2-core machine: intra-op threads cost more than they gain (4x here)
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _isolate(mp: pytest.MonkeyPatch, home: Path) -> None:
    mp.setenv("AFFECTLAB_HOME", str(home))
    mp.setenv("TORCH_HOME", str(home / "torch"))
    mp.setenv("AFFECTLAB_OFFLINE", "1")
    mp.delenv("AFFECTLAB_ASSET_BASE_URL", raising=False)


@pytest.fixture(scope="session", autouse=True)
def _isolated_session_home(tmp_path_factory):
    # session-scoped fixtures run before the per-test isolation below: give them an empty home too
    with pytest.MonkeyPatch.context() as mp:
        _isolate(mp, tmp_path_factory.mktemp("affectlab-session-home"))
        yield


@pytest.fixture(autouse=True)
def _isolated_home(tmp_path_factory, monkeypatch):
    _isolate(monkeypatch, tmp_path_factory.mktemp("affectlab-home"))


def seed_assets(home: Path) -> Path:
    """Link every file of ``../shared/models`` that is a registered asset to where :func:`asset_path` looks.

    ``torch-hub`` assets go to ``home/torch/hub/checkpoints`` (``TORCH_HOME=home/torch``).
    Skips the calling test when ``../shared/models`` is absent.
    """
    from affectlab.runtime.assets import ASSETS, ASSETS_DIR

    if not SHARED_MODELS.is_dir():
        pytest.skip(f"pretrained files not found at {SHARED_MODELS}")
    by_name = {p.name: p for p in SHARED_MODELS.rglob("*") if p.is_file()}
    for asset in ASSETS.values():
        src = by_name.get(asset.filename)
        if src is None:
            continue
        folder = home / ("torch/hub/checkpoints" if asset.target == "torch-hub" else ASSETS_DIR)
        folder.mkdir(parents=True, exist_ok=True)
        link = folder / asset.filename
        if not link.exists():
            os.symlink(src, link)
    return home


@pytest.fixture
def assets_home(tmp_path_factory, monkeypatch):
    """A temporary ``AFFECTLAB_HOME`` (and ``TORCH_HOME``) holding the assets of ``../shared/models``; offline."""
    home = seed_assets(tmp_path_factory.mktemp("affectlab-assets-home"))
    _isolate(monkeypatch, home)
    return home


@pytest.fixture(scope="session")
def assets_home_session(tmp_path_factory):
    """Session-wide seeded home, for session-scoped fixtures (e.g. a detector loaded once).

    The environment points at it only while session-scoped fixtures that depend on it are set up
    and torn down; tests themselves still run in their own empty home (use ``assets_home`` there),
    so load what you need from it in the session fixture.
    """
    home = seed_assets(tmp_path_factory.mktemp("affectlab-assets-session"))
    with pytest.MonkeyPatch.context() as mp:
        _isolate(mp, home)
        yield home


# ----------------------------------------------------------------------------- analyze tests
@pytest.fixture(scope="module")
def predictor():
    """A real (untrained) baseline on the built-in small CNN, per test module."""
    from analyze_media import untrained_predictor

    return untrained_predictor()


@pytest.fixture(scope="module")
def model_file(tmp_path_factory, predictor):
    """:func:`predictor` saved as a ``model.ckpt`` (for the CLI and other processes)."""
    from affectlab.modelfile import save_model

    return save_model(tmp_path_factory.mktemp("run") / "model.ckpt", predictor.method)
