"""The asset hub: pretrained model files affectlab did not train, by name.

Each :class:`Asset` knows its official download URL, sha256, size and license. Files live
under :func:`affectlab_home` ``/assets`` (or, for ``target="torch-hub"``, in torchvision's
own cache ``$TORCH_HOME/hub/checkpoints`` so torchvision finds them offline).

:func:`asset_path` returns a verified local file, downloading it on first use: the bytes
go to a temporary file in the destination folder, are checked against the sha256 and
only then renamed into place, so an interrupted or corrupted download leaves nothing
behind and a wrong file is never used. Offline (``AFFECTLAB_OFFLINE=1``, ``download=False``
or a failed download) it raises :class:`AssetMissingError` with one line naming the asset,
its URL and the command that registers a local copy::

    affectlab models add face_detection_yunet_2023mar.onnx   # recognised by its sha256
    affectlab models fetch all                               # download every asset now

Environment
-----------
``AFFECTLAB_HOME``
    Root of affectlab's cache (default: the platform's user cache dir, e.g.
    ``~/.cache/affectlab`` on Linux). Assets go to ``assets/``, imported models to ``models/``.
``AFFECTLAB_OFFLINE``
    ``1`` (or ``true``/``yes``): never download; a missing asset is an error.
``AFFECTLAB_ASSET_BASE_URL``
    Download every asset from ``<base>/<filename>`` instead of its official URL (a mirror).
``TORCH_HOME``
    Where ``torch-hub`` assets live (``$TORCH_HOME/hub/checkpoints``), as torchvision reads it.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from affectlab.errors import ModelError

#: Subfolder of :func:`affectlab_home` holding ``target="assets"`` files.
ASSETS_DIR = "assets"
#: Seconds to wait for a download server before giving up.
DOWNLOAD_TIMEOUT = 30.0


class AssetError(ModelError):
    """A file given as an asset is unknown or damaged, or an asset name is unknown."""


class AssetMissingError(ModelError):
    """An asset is not present locally and cannot be downloaded now."""

    def __init__(self, message: str, *, asset: str | None = None, url: str | None = None):
        super().__init__(message)
        self.asset = asset
        self.url = url


@dataclass(frozen=True)
class Asset:
    """A pretrained file affectlab can download and verify.

    Attributes
    ----------
    name : str
        Registry name (``"yunet"``).
    filename : str
        File name on disk (and at the end of ``url``).
    url : str
        Official download location.
    sha256 : str
        Hex digest the file must have.
    size : int
        Size in bytes.
    license : str
        SPDX-like license of the file.
    homepage : str
        Where the file and its license are described.
    description : str
        One line: what it is and what uses it.
    target : str
        ``"assets"`` (under :func:`affectlab_home`) or ``"torch-hub"``
        (``torch.hub.get_dir()/checkpoints``, where torchvision looks).
    """

    name: str
    filename: str
    url: str
    sha256: str
    size: int
    license: str
    homepage: str
    description: str
    target: str = "assets"

    def __post_init__(self):
        if self.target not in ("assets", "torch-hub"):
            raise ValueError(f"asset {self.name!r}: target must be 'assets' or 'torch-hub', got {self.target!r}")
        if len(self.sha256) != 64:
            raise ValueError(f"asset {self.name!r}: sha256 must be 64 hex digits, got {self.sha256!r}")


#: Every known asset by name (extend with :func:`register_asset`).
ASSETS: dict[str, Asset] = {}


def register_asset(asset: Asset) -> Asset:
    """Add (or replace) ``asset`` in :data:`ASSETS`; returns it."""
    ASSETS[asset.name] = asset
    return asset


def get_asset(name: str) -> Asset:
    """The registered asset ``name``, or an :class:`AssetError` listing the known names."""
    if isinstance(name, Asset):
        return name
    try:
        return ASSETS[name]
    except KeyError:
        raise AssetError(f"unknown asset {name!r}; known assets: {', '.join(sorted(ASSETS))}") from None


def affectlab_home() -> Path:
    """Root of affectlab's cache: ``$AFFECTLAB_HOME``, else the platform's user cache dir."""
    root = os.environ.get("AFFECTLAB_HOME")
    if root:
        return Path(root).expanduser()
    import platformdirs

    return Path(platformdirs.user_cache_dir("affectlab", appauthor=False))


def offline() -> bool:
    """True when ``AFFECTLAB_OFFLINE`` forbids downloads."""
    return os.environ.get("AFFECTLAB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def asset_dir(name: str | Asset) -> Path:
    """The folder an asset lives in (not created)."""
    asset = get_asset(name)
    if asset.target == "torch-hub":
        import torch.hub  # torch-hub assets exist for torchvision, so torch is there

        return Path(torch.hub.get_dir()) / "checkpoints"
    return affectlab_home() / ASSETS_DIR


def asset_file(name: str | Asset) -> Path:
    """Where an asset's file is (or would be) on disk; no check, no download."""
    asset = get_asset(name)
    return asset_dir(asset) / asset.filename


def asset_url(name: str | Asset) -> str:
    """The URL an asset is downloaded from (``AFFECTLAB_ASSET_BASE_URL`` overrides the host)."""
    asset = get_asset(name)
    base = os.environ.get("AFFECTLAB_ASSET_BASE_URL")
    return f"{base.rstrip('/')}/{asset.filename}" if base else asset.url


# (resolved path, size, mtime_ns) -> sha256, so a file is hashed once per process
_HASHES: dict[tuple[str, int, int], str] = {}


def file_sha256(path: str | os.PathLike) -> str:
    """sha256 of a file, cached by path, size and modification time."""
    p = Path(path)
    st = p.stat()
    key = (str(p.resolve()), st.st_size, st.st_mtime_ns)
    digest = _HASHES.get(key)
    if digest is None:
        h = hashlib.sha256()
        with open(p, "rb") as fh:
            while chunk := fh.read(1 << 20):
                h.update(chunk)
        digest = _HASHES[key] = h.hexdigest()
    return digest


def _verified(path: Path, asset: Asset) -> bool:
    try:
        # a size mismatch settles it without reading the file
        return path.stat().st_size == asset.size and file_sha256(path) == asset.sha256
    except OSError:
        return False


def asset_status(name: str | Asset) -> str:
    """``"present"`` (file there, sha256 matches), ``"missing"`` or ``"damaged"`` (file there, wrong bytes)."""
    asset = get_asset(name)
    path = asset_file(asset)
    if not path.exists():
        return "missing"
    return "present" if _verified(path, asset) else "damaged"


def _missing(asset: Asset, why: str) -> AssetMissingError:
    url = asset_url(asset)
    return AssetMissingError(
        f"asset {asset.name!r} ({asset.filename}) is not in {asset_dir(asset)} and {why}; download it from {url} "
        f"and register it with: affectlab models add {asset.filename}",
        asset=asset.name,
        url=url,
    )


class _RichBar:
    """The progress-bar object pooch's HTTPDownloader drives (total / update / reset / close) on a rich task."""

    def __init__(self, progress, task):
        self._progress, self._task = progress, task

    @property
    def total(self):
        return self._progress.tasks[0].total

    @total.setter
    def total(self, value):
        self._progress.update(self._task, total=value or None)

    def update(self, n):
        self._progress.advance(self._task, n)

    def reset(self):
        self._progress.reset(self._task, total=self._progress.tasks[0].total)

    def close(self):
        pass


@contextmanager
def _quiet_pooch():
    # pooch logs "Downloading data from ..." at INFO on its own stderr handler; the bar says it
    import pooch

    logger = pooch.get_logger()
    level = logger.level
    logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        logger.setLevel(level)


def _download(asset: Asset, progress: bool = True, timeout: float = DOWNLOAD_TIMEOUT) -> Path:
    """Download, verify and atomically place ``asset``; raise AssetMissingError on any failure."""
    import pooch
    import requests
    from rich.console import Console
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn, TransferSpeedColumn

    url = asset_url(asset)
    folder = asset_dir(asset)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise _missing(asset, f"its folder cannot be created ({exc})") from None
    bar = Progress(
        TextColumn(f"[bold]{asset.filename}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
        console=Console(stderr=True),
        transient=True,
        disable=not progress,
    )
    try:
        with bar, _quiet_pooch():
            task = bar.add_task("download", total=asset.size)
            downloader = pooch.HTTPDownloader(progressbar=_RichBar(bar, task), chunk_size=1 << 16, timeout=timeout)
            # pooch streams into a temporary file in `folder`, checks the hash, then renames it into place;
            # on any failure the temporary file is deleted
            pooch.retrieve(url, known_hash=f"sha256:{asset.sha256}", fname=asset.filename, path=folder,
                           downloader=downloader)
    except ValueError as exc:
        # pooch's hash mismatch: the downloaded bytes were refused and removed
        reason = "the downloaded file's sha256 did not match (refused and deleted)" if "hash" in str(exc).lower() else str(exc)
        raise _missing(asset, f"downloading it failed: {reason}") from None
    except (requests.exceptions.RequestException, OSError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise _missing(asset, f"downloading it failed ({type(exc).__name__}: {reason})") from None
    path = folder / asset.filename
    if not _verified(path, asset):  # pragma: no cover - pooch verified it; a concurrent writer could not
        raise _missing(asset, "the downloaded file does not verify")
    return path


def asset_path(name: str | Asset, download: bool = True, *, progress: bool = True) -> Path:
    """A verified local copy of asset ``name``, downloading it on first use.

    Parameters
    ----------
    name : str or Asset
        Registry name (see :data:`ASSETS`).
    download : bool
        Allow a download when the file is missing or damaged. ``False`` never touches the
        network; neither does ``AFFECTLAB_OFFLINE=1``.
    progress : bool
        Show a rich progress bar while downloading.

    Returns
    -------
    pathlib.Path
        The file, its sha256 checked (once per process per file version).

    Raises
    ------
    AssetMissingError
        Missing (or damaged) and not downloadable now: one line with the asset, its URL
        and the ``affectlab models add`` command.
    AssetError
        Unknown asset name.
    """
    asset = get_asset(name)
    path = asset_file(asset)
    if path.exists():
        if _verified(path, asset):
            return path
        state = "is damaged (wrong sha256)"
    else:
        state = None
    if not download or offline():
        why = "downloads are off (AFFECTLAB_OFFLINE=1)" if download else "downloading was not allowed"
        if state:
            why = f"the copy there {state} and {why}"
        raise _missing(asset, why)
    if state:
        # never used, and pooch would refuse to verify-in-place anyway: replace it
        path.unlink(missing_ok=True)
    return _download(asset, progress=progress)


def fetch(names, *, progress: bool = True) -> list[tuple[str, Path]]:
    """Make assets present (download what is missing or damaged).

    Parameters
    ----------
    names : str or iterable of str
        Asset names, or ``"all"``.

    Returns
    -------
    list of (name, path)
    """
    if isinstance(names, str):
        names = [names]
    names = list(names)
    if "all" in names:
        names = sorted(ASSETS)
    assets = [get_asset(n) for n in names]  # unknown names fail before any download
    return [(a.name, asset_path(a, progress=progress)) for a in assets]


def _copy_into_place(src: Path, asset: Asset) -> Path:
    folder = asset_dir(asset)
    folder.mkdir(parents=True, exist_ok=True)
    dest = folder / asset.filename
    fd, tmp = tempfile.mkstemp(prefix=f".{asset.filename}.", suffix=".part", dir=folder)
    os.close(fd)
    try:
        shutil.copyfile(src, tmp)
        if file_sha256(tmp) != asset.sha256:
            raise AssetError(f"{src}: the copy to {folder} does not verify (disk full?); nothing was added")
        os.replace(tmp, dest)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return dest


def add_files(paths) -> list[tuple[Path, str]]:
    """Register local copies of assets (recognised by sha256) in the cache.

    Every file is checked first; if any is unknown or damaged nothing is copied and an
    :class:`AssetError` names each refused file and what was expected.

    Parameters
    ----------
    paths : iterable of path

    Returns
    -------
    list of (destination path, asset name)
    """
    by_hash = {a.sha256: a for a in ASSETS.values()}
    by_filename = {a.filename: a for a in ASSETS.values()}
    matched, refused = [], []
    for p in map(Path, paths):
        if not p.is_file():
            refused.append(f"{p}: no such file")
            continue
        asset = by_hash.get(file_sha256(p))
        if asset is not None:
            matched.append((p, asset))
        elif p.name in by_filename:
            a = by_filename[p.name]
            refused.append(
                f"{p}: damaged copy of asset {a.name!r} (sha256 {file_sha256(p)[:12]}..., {p.stat().st_size} B; "
                f"expected {a.sha256[:12]}..., {a.size} B from {a.url})"
            )
        else:
            refused.append(
                f"{p}: not a known asset (sha256 {file_sha256(p)[:12]}...); expected one of: "
                + ", ".join(f"{a.filename} ({a.name})" for a in sorted(ASSETS.values(), key=lambda a: a.name))
            )
    if refused:
        raise AssetError("refused, nothing added: " + "; ".join(refused))
    return [(_copy_into_place(p, a), a.name) for p, a in matched]


def list_assets() -> list[dict]:
    """One row per registered asset: name, filename, status, size, license, path, description, url."""
    return [
        {
            "name": a.name,
            "filename": a.filename,
            "status": asset_status(a),
            "size": a.size,
            "license": a.license,
            "path": str(asset_file(a)),
            "description": a.description,
            "url": a.url,
            "homepage": a.homepage,
        }
        for a in sorted(ASSETS.values(), key=lambda a: a.name)
    ]


_FACEAPI = "https://cdn.jsdelivr.net/npm/@vladmandic/face-api@1.7.15/model/"

register_asset(Asset(
    name="yunet",
    filename="face_detection_yunet_2023mar.onnx",
    url="https://github.com/opencv/opencv_zoo/raw/main/models/face_detection_yunet/face_detection_yunet_2023mar.onnx",
    sha256="8f2383e4dd3cfbb4553ea8718107fc0423210dc964f9f4280604804ed2552fa4",
    size=232589,
    license="MIT",
    homepage="https://github.com/opencv/opencv_zoo/tree/main/models/face_detection_yunet",
    description="YuNet face detector (boxes, 5 keypoints, score) for cv2.FaceDetectorYN",
))
register_asset(Asset(
    name="face-landmarker",
    filename="face_landmarker.task",
    url="https://storage.googleapis.com/mediapipe-models/face_landmarker/face_landmarker/float16/1/face_landmarker.task",
    sha256="64184e229b263107bc2b804c6625db1341ff2bb731874b0bcc2fe6544e0bc9ff",
    size=3758596,
    license="Apache-2.0",
    homepage="https://ai.google.dev/edge/mediapipe/solutions/vision/face_landmarker",
    description="MediaPipe FaceLandmarker bundle: analyze columns pose_*, AU<k> (landmarker), bs_*, lm<i>_*",
))
register_asset(Asset(
    name="mobilenet-v2-imagenet",
    filename="mobilenet_v2-b0353104.pth",
    url="https://download.pytorch.org/models/mobilenet_v2-b0353104.pth",
    sha256="b03531047ffacf1e2488318dcd2aba1126cde36e3bfe1aa5cb07700aeeee9889",
    size=14212972,
    license="BSD-3-Clause",
    homepage="https://pytorch.org/vision/stable/models/generated/torchvision.models.mobilenet_v2.html",
    description="torchvision MobileNetV2 IMAGENET1K_V1 weights (in torchvision's own cache)",
    target="torch-hub",
))
register_asset(Asset(
    name="faceapi-expression",
    filename="face_expression_model.bin",
    url=_FACEAPI + "face_expression_model.bin",
    sha256="9a9840f2cf1f4c7eab95f197512569345c00d2426754d4608b92af30e0300f3d",
    size=329468,
    license="MIT",
    homepage="https://github.com/vladmandic/face-api",
    description="face-api.js FaceExpressionNet weights (7 expressions, no contempt; uint8-quantised)",
))
register_asset(Asset(
    name="faceapi-expression-manifest",
    filename="face_expression_model-weights_manifest.json",
    url=_FACEAPI + "face_expression_model-weights_manifest.json",
    sha256="5b349c17c7836da506e03422cd6461c74085d8bb2713ad4114647dc5d28174c8",
    size=6980,
    license="MIT",
    homepage="https://github.com/vladmandic/face-api",
    description="face-api.js FaceExpressionNet weights manifest (tensor names, shapes, quantisation)",
))


__all__ = [
    "ASSETS",
    "Asset",
    "AssetError",
    "AssetMissingError",
    "add_files",
    "affectlab_home",
    "asset_dir",
    "asset_file",
    "asset_path",
    "asset_status",
    "asset_url",
    "fetch",
    "file_sha256",
    "get_asset",
    "list_assets",
    "offline",
    "register_asset",
]
