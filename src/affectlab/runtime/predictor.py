"""Inference with a trained model: face crops in, expression / VA / AU predictions out.

::

    from affectlab import Predictor
    pred = Predictor.load("runs/baseline")          # a run directory or a model.ckpt
    out = pred.predict(crops)                        # list of HxWx3 uint8 RGB face crops
    out["expr_prob"], out["va"], out["au_prob"]      # numpy arrays, one row per crop
    table = pred.predict_table(crops)                # expr_<name>, expression, valence, arousal, AU<k>

Images are resized and normalised with the preprocessing stored in the model file
through :func:`affectlab.data.transforms.preprocessing_transform` (the ``eval`` pipeline), the
same code the training engine uses for validation, so training and inference see
identical inputs. Gray images are replicated to three channels, RGBA loses its alpha.

Models are named as in :func:`affectlab.runtime.hub.resolve_model` (a packaged or
imported name, a run directory or a model file).
"""

from __future__ import annotations

import os
from typing import Any, Mapping, Sequence

import numpy as np

from affectlab.errors import ConfigError, ModelError

def _fused_copy(method):
    """An eval-mode copy of ``method`` with Conv2d + BatchNorm2d pairs folded together."""
    import copy

    from torch import nn
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    pairs = []
    for seq in method.modules():
        if isinstance(seq, nn.Sequential):
            kids = list(seq.named_children())
            for (name_a, a), (name_b, b) in zip(kids, kids[1:]):
                if (
                    isinstance(a, nn.Conv2d)
                    and isinstance(b, nn.BatchNorm2d)
                    and b.track_running_stats
                    and b.running_mean is not None
                    and a.out_channels == b.num_features
                ):
                    pairs.append((seq, name_a, name_b))
    if not pairs:
        return method
    clone = copy.deepcopy(method).eval()
    lookup = {id(m): c for m, c in zip(method.modules(), clone.modules())}
    for seq, name_a, name_b in pairs:
        target = lookup[id(seq)]
        conv, bn = getattr(target, name_a), getattr(target, name_b)
        setattr(target, name_a, fuse_conv_bn_eval(conv, bn))
        setattr(target, name_b, nn.Identity())
    return clone.requires_grad_(False)


def _as_image_list(images) -> list[np.ndarray]:
    """Validate the ``images`` argument: a sequence of images or an N x H x W (x C) array."""
    if isinstance(images, np.ndarray):
        if images.ndim not in (3, 4):
            raise ConfigError(
                f"images as one array must be N x H x W (gray) or N x H x W x C, got shape {images.shape}; "
                "wrap a single image in a list: predict([image])"
            )
        return list(images)
    if isinstance(images, (str, bytes, os.PathLike)) or not isinstance(images, Sequence):
        raise ConfigError(
            f"images must be a list of H x W x 3 uint8 arrays or an N x H x W x 3 array, got {type(images).__name__}"
        )
    return [np.asarray(im) for im in images]


class Predictor:
    """A trained method ready for inference on face crops.

    Parameters
    ----------
    method : affectlab.methods.base.Method
        The model (put in eval mode).
    preprocessing : Preprocessing or mapping, optional
        Input size and normalisation (:class:`affectlab.features.backbones.Preprocessing`).
        Defaults to ``method.preprocessing`` or its backbone's. Ignored for
        feature-level methods (``input_kind == "features"``), which only accept
        :meth:`predict_features`.
    batch_size : int
        Images per forward pass.
    device : str or torch.device
        Where the model runs (``"cpu"``, ``"cuda"``).
    info : dict, optional
        What :func:`affectlab.runtime.hub.load_model` returned about the model.
    fuse : bool
        Run an inference copy of the model in which every convolution directly followed
        by a batch norm (inside an ``nn.Sequential``) is folded into one convolution:
        the same function in eval mode, fewer passes over memory. ``method`` itself is
        left untouched.

    Attributes
    ----------
    label_space : LabelSpace
    preprocessing : Preprocessing or None
    input_size : int or None
    """

    def __init__(
        self,
        method,
        preprocessing=None,
        *,
        batch_size: int = 64,
        device="cpu",
        info: Mapping | None = None,
        fuse: bool = True,
    ):
        import torch

        from affectlab.features.backbones import Preprocessing
        from affectlab.methods.base import Method

        if not isinstance(method, Method):
            raise ModelError(f"Predictor needs an affectlab Method, got {type(method).__name__}")
        if getattr(method, "input_kind", "image") != "image":
            preprocessing = None  # feature-level methods never see pixels
        elif preprocessing is None:
            preprocessing = getattr(method, "preprocessing", None) or getattr(
                getattr(method, "backbone", None), "preprocessing", None
            )
        self.preprocessing = None if preprocessing is None else Preprocessing.from_dict(preprocessing)
        self.batch_size = self._check_batch_size(batch_size)
        self.device = torch.device(device)
        self.method = method.to(self.device).eval()
        self._model = _fused_copy(self.method) if fuse else self.method
        self.label_space = method.label_space
        self.info = dict(info or {})
        self._transform = None if self.preprocessing is None else self._build_transform(self.preprocessing)

    # -- construction ------------------------------------------------------------------
    @classmethod
    def load(cls, model: str | os.PathLike, *, batch_size: int = 64, device="cpu") -> "Predictor":
        """Load a run directory, a ``model.ckpt`` file or a packaged model name.

        Raises
        ------
        ModelError
            If the model cannot be found or loaded.
        """
        from affectlab.runtime.hub import load_model

        method, info = load_model(model)
        return cls(method, info.get("preprocessing"), batch_size=batch_size, device=device, info=info)

    @classmethod
    def from_method(cls, method, preprocessing=None, **kwargs) -> "Predictor":
        """Wrap an in-memory method (e.g. just trained) without a checkpoint file."""
        return cls(method, preprocessing, **kwargs)

    @staticmethod
    def _check_batch_size(batch_size) -> int:
        if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
            raise ConfigError(f"batch_size must be a positive integer, got {batch_size!r}")
        return int(batch_size)

    @staticmethod
    def _build_transform(pre):
        from affectlab.data.transforms import preprocessing_transform

        return preprocessing_transform(pre, "eval", train=False)

    @property
    def extra_columns(self) -> dict[str, str]:
        """Method extras shown as analysis columns: name -> pandas dtype (e.g. ``archetype``)."""
        return dict(self.method.extra_columns())

    @property
    def input_size(self) -> int | None:
        """Side of the square model input in pixels (``None`` for feature-level models)."""
        return None if self.preprocessing is None else self.preprocessing.input_size

    # -- preprocessing -------------------------------------------------------------------
    def preprocess(self, images) -> "torch.Tensor":  # noqa: F821
        """Face crops -> the normalised float tensor [N, 3, S, S] the model takes.

        Crops of one size are resized together (the operations are the per-image ones of
        the training pipeline, applied to a stack).
        """
        import torch

        from affectlab.data.transforms import EvalPipeline, to_rgb_uint8

        if self._transform is None:
            raise ModelError(
                "this model works on cached backbone features, not images; use predict_features "
                "(or extract features first with 'affectlab extract')"
            )
        pipeline = self._transform
        arrays = []
        for i, im in enumerate(_as_image_list(images)):
            try:
                arrays.append(to_rgb_uint8(im))
            except ConfigError as exc:
                raise ConfigError(f"image {i}: {exc}") from None
        s = self.input_size
        out = torch.empty((len(arrays), 3, s, s), dtype=torch.float32)
        groups: dict[tuple[int, int], list[int]] = {}
        for i, a in enumerate(arrays):
            groups.setdefault(a.shape[:2], []).append(i)
        for idx in groups.values():
            # contiguous NCHW first: the elementwise ops are several times slower on the
            # permuted (channels-last) view
            stack = torch.from_numpy(np.stack([arrays[i] for i in idx])).permute(0, 3, 1, 2).contiguous()
            if not isinstance(pipeline.pipeline, EvalPipeline):  # torchvision ops need their image type
                from torchvision import tv_tensors

                stack = tv_tensors.Image(stack)
            out[idx] = pipeline.pipeline(stack).as_subclass(torch.Tensor)
        return out

    # -- prediction ----------------------------------------------------------------------
    def predict(self, images, *, batch_size: int | None = None, progress: bool = False) -> dict[str, Any]:
        """Predict expression probabilities, valence/arousal and AU probabilities.

        Parameters
        ----------
        images : list of arrays or ndarray
            Face crops: ``H x W x 3`` uint8 RGB (any size; ``H x W`` gray and RGBA are
            accepted), as a list, or one ``N x H x W x 3`` / ``N x H x W`` array.
        batch_size : int, optional
            Overrides the predictor's batch size.
        progress : bool
            Show a progress bar over batches.

        Returns
        -------
        dict
            ``expr_prob`` [N, C] (softmax; sigmoid for multi-label label spaces),
            ``va`` [N, 2] (valence, arousal in [-1, 1]), ``au_prob`` [N, K] -- each only
            when the model predicts that descriptor -- and ``extras``, a dict of
            per-sample method outputs (e.g. ``archetype``) as arrays with N rows.
        """
        images = _as_image_list(images)
        bs = self.batch_size if batch_size is None else self._check_batch_size(batch_size)
        chunks = (images[i : i + bs] for i in range(0, len(images), bs))
        return self._run(
            ({"image": self.preprocess(chunk)} for chunk in chunks), len(images), bs, progress
        )

    def predict_features(self, features, *, batch_size: int | None = None, progress: bool = False) -> dict[str, Any]:
        """Like :meth:`predict` for feature-level models: ``features`` is [N, D] global features."""
        import torch

        arr = np.asarray(features, dtype=np.float32)
        if arr.ndim != 2:
            raise ConfigError(f"features must be an N x D array, got shape {arr.shape}")
        bs = self.batch_size if batch_size is None else self._check_batch_size(batch_size)
        batches = ({"features": torch.from_numpy(arr[i : i + bs])} for i in range(0, len(arr), bs))
        return self._run(batches, len(arr), bs, progress)

    def _run(self, batches, n: int, bs: int, progress: bool) -> dict[str, Any]:
        import torch

        from affectlab.data.batch import Batches

        space = self.label_space
        parts: dict[str, list[np.ndarray]] = {}
        extras: dict[str, list[np.ndarray]] = {}
        for batch in Batches(batches, device=self.device, progress=progress, total=-(-n // bs), description="predict"):
            m = next(iter(batch.values())).shape[0]
            out = self._model(batch)
            if out.expr_logits is not None and space.expressions:
                logits = out.expr_logits.float()
                prob = torch.sigmoid(logits) if space.multilabel else torch.softmax(logits, dim=-1)
                parts.setdefault("expr_prob", []).append(prob.cpu().numpy())
            if out.va is not None and space.va:
                parts.setdefault("va", []).append(out.va.float().cpu().numpy())
            if out.au_logits is not None and space.aus:
                parts.setdefault("au_prob", []).append(torch.sigmoid(out.au_logits.float()).cpu().numpy())
            for key, value in out.extras.items():
                # only per-sample extras can be tabulated
                if torch.is_tensor(value) and value.ndim >= 1 and value.shape[0] == m:
                    extras.setdefault(key, []).append(value.cpu().numpy())
        result: dict[str, Any] = {}
        widths = {"expr_prob": space.num_expressions, "va": 2, "au_prob": space.num_aus}
        for key, width in widths.items():
            if key in parts:
                result[key] = np.concatenate(parts[key])
            elif n == 0 and width and (key != "va" or space.va):
                result[key] = np.zeros((0, width), dtype=np.float32)
        # the method turns its codes into table values (e.g. class indices into names)
        result["extras"] = self.method.tabulate_extras({k: np.concatenate(v) for k, v in extras.items()})
        return result

    def table(self, prediction: Mapping[str, Any]):
        """Turn the dict of :meth:`predict` into the DataFrame of :meth:`predict_table`."""
        import pandas as pd

        space = self.label_space
        cols: dict[str, Any] = {}
        if "expr_prob" in prediction:
            prob = np.asarray(prediction["expr_prob"])
            for j, name in enumerate(space.expressions):
                cols[f"expr_{name}"] = prob[:, j]
            names = np.asarray(space.expressions, dtype=object)
            cols["expression"] = names[prob.argmax(axis=1)] if len(prob) else np.empty(0, dtype=object)
        if "va" in prediction:
            va = np.asarray(prediction["va"])
            cols["valence"] = va[:, 0]
            cols["arousal"] = va[:, 1]
        if "au_prob" in prediction:
            au = np.asarray(prediction["au_prob"])
            for j, name in enumerate(space.aus):
                cols[name] = au[:, j]
        for key, value in (prediction.get("extras") or {}).items():
            value = np.asarray(value)
            if value.ndim == 1 and key not in cols:
                cols[key] = value
        return pd.DataFrame(cols)

    def predict_table(self, images, **kwargs):
        """Predictions as a pandas DataFrame, one row per image.

        Columns: ``expr_<name>`` (probabilities), ``expression`` (argmax
        name), ``valence``, ``arousal``, ``AU<k>`` (probabilities), for the descriptors
        the model predicts, then any one-value-per-sample method extra (``archetype``).
        Keyword arguments go to :meth:`predict`.
        """
        return self.table(self.predict(images, **kwargs))

    def __repr__(self) -> str:
        tasks = ",".join(self.label_space.tasks)
        return f"Predictor(method={self.method.name!r}, tasks={tasks}, input_size={self.input_size})"
