"""face-api.js FaceExpressionNet in PyTorch: a pretrained 7-expression model and 256-d face features.

The network of face-api.js (V. Mühler, MIT; weights as republished in ``@vladmandic/face-api``
1.7.15), rebuilt layer by layer from its TensorFlow.js source so its published weights load
unchanged:

* input: 112 x 112 RGB, ``(x - [122.782, 117.001, 104.298]) / 255`` with ``x`` in 0..255;
* ``FaceFeatureExtractor``: four ``denseBlock4`` blocks (32, 64, 128, 256 channels), each
  halving the resolution (112 -> 56 -> 28 -> 14 -> 7). In a block, ``conv0`` is a 3x3 stride-2
  convolution (a plain one in the first block, depthwise-separable after), then three 3x3
  depthwise-separable convolutions ``conv1..3`` with stride 1; every convolution has a bias
  added after the pointwise step and no ReLU of its own. With ``o1 = relu(conv0(x))``,
  ``o2 = conv1(o1)``, ``o3 = conv2(relu(o1 + o2))``, ``o4 = conv3(relu(o1 + o2 + o3))``
  the block returns ``relu(o1 + o2 + o3 + o4)`` (dense connections by summation);
* ``tf.avgPool(7, stride 2, 'valid')`` -> 256-d features (:meth:`FaceExpressionNet.features`);
* one fully connected layer 256 -> 7, softmax, classes in the order neutral, happy, sad,
  angry, fearful, disgusted, surprised. **No contempt.**

TensorFlow's ``'same'`` padding is asymmetric for a stride-2 3x3 convolution on an even input
(nothing before, one row/column after); :func:`_same_pad` reproduces it, which PyTorch's
symmetric ``padding=1`` would not. Weights arrive as the manifest + ``.bin`` pair of
TensorFlow.js: tensors concatenated in manifest order, most of them uint8-quantised
(``value = q * scale + min``), filters in TF layouts (``[kh, kw, in, out]``, depthwise
``[kh, kw, in, 1]``, fully connected ``[in, out]``).

:func:`load_faceapi_expression` turns that pair into a :class:`FaceApiExpression` method
(non-trainable, like ``onnx``): its ``expr_logits`` follow affectlab's canonical order and
its ``extras["features"]`` carry the 256-d features, so it serves as a model
(``affectlab models import faceapi:expression``), a distillation teacher and a frozen
feature extractor: its encoder is a :class:`FaceApiBackbone`, so
``--backbone run:$(affectlab models path faceapi:expression)`` extracts those features.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from affectlab.data.schema import EXPRESSIONS, LabelSpace, canonical_expression
from affectlab.errors import ModelError
from affectlab.features.backbones import Backbone, Preprocessing
from affectlab.methods.base import Method, MethodConfig, Outputs, register_method

#: face-api.js output order.
FACEAPI_CLASSES = ("neutral", "happy", "sad", "angry", "fearful", "disgusted", "surprised")
#: The same classes in affectlab's names.
FACEAPI_EXPRESSIONS = tuple(canonical_expression(c) for c in FACEAPI_CLASSES)
#: face-api's per-channel RGB mean in 0..255 units; the input is then divided by 255.
FACEAPI_MEAN_RGB = (122.782, 117.001, 104.298)
INPUT_SIZE = 112
FEATURE_DIM = 256
#: The framing that suited the net best here (``benchmarks/faceapi_framing.py``): the detector's
#: box plus 10% per side -- facial_expressions accuracy 0.801 (margin 0: 0.752, 0.2: 0.772,
#: aligned scale 1.0: 0.780), london smile AUC 0.948 (margin 0: 0.967).
FACEAPI_FRAMING = {"kind": "box", "margin": 0.1}
_CHANNELS = (32, 64, 128, 256)


def faceapi_preprocessing() -> dict:
    """The model file's preprocessing: 112 px RGB scaled to [0, 1] (``normalize="none"``).

    face-api's ``(x - mean) / 255`` on 0..255 pixels equals ``x/255 - mean/255``; the method
    subtracts ``mean/255`` itself, so every affectlab transform (analyze, evaluate, extract)
    feeds it with the plain ``none`` normalisation.
    """
    return {
        "input_size": INPUT_SIZE,
        "mean": [0.0, 0.0, 0.0],
        "std": [1.0, 1.0, 1.0],
        "normalize": "none",
        "interpolation": "bilinear",
        "framing": dict(FACEAPI_FRAMING),
    }


def _same_pad(x: torch.Tensor, kernel: int, stride: int) -> torch.Tensor:
    """TensorFlow ``'same'`` padding: the odd pixel goes after (bottom/right)."""
    pads = []
    for size in (x.shape[-1], x.shape[-2]):  # F.pad order: width then height
        out = math.ceil(size / stride)
        total = max((out - 1) * stride + kernel - size, 0)
        pads += [total // 2, total - total // 2]
    return F.pad(x, pads) if any(pads) else x


class _Conv(nn.Module):
    """A 3x3 convolution with bias and TF 'same' padding (first layer of the first block)."""

    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.stride = stride
        self.conv = nn.Conv2d(cin, cout, 3, stride=stride, bias=True)

    def forward(self, x):
        return self.conv(_same_pad(x, 3, self.stride))


class _SeparableConv(nn.Module):
    """``tf.separableConv2d`` (3x3 depthwise, no bias; 1x1 pointwise) plus a bias."""

    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.stride = stride
        self.depthwise = nn.Conv2d(cin, cin, 3, stride=stride, groups=cin, bias=False)
        self.pointwise = nn.Conv2d(cin, cout, 1, bias=True)

    def forward(self, x):
        return self.pointwise(self.depthwise(_same_pad(x, 3, self.stride)))


class _DenseBlock4(nn.Module):
    def __init__(self, cin: int, cout: int, first: bool):
        super().__init__()
        self.conv0 = _Conv(cin, cout, 2) if first else _SeparableConv(cin, cout, 2)
        self.conv1 = _SeparableConv(cout, cout, 1)
        self.conv2 = _SeparableConv(cout, cout, 1)
        self.conv3 = _SeparableConv(cout, cout, 1)

    def forward(self, x):
        o1 = F.relu(self.conv0(x))
        o2 = self.conv1(o1)
        o3 = self.conv2(F.relu(o1 + o2))
        o4 = self.conv3(F.relu(o1 + o2 + o3))
        return F.relu(o1 + o2 + o3 + o4)


class FaceExpressionNet(nn.Module):
    """The face-api.js FaceExpressionNet (see the module docstring).

    ``forward(x)`` takes the normalised ``N x 3 x 112 x 112`` input and returns the 7 logits
    in face-api's order (:data:`FACEAPI_CLASSES`); :meth:`features` returns the 256-d
    pooled features the classifier sees.
    """

    def __init__(self):
        super().__init__()
        blocks, cin = [], 3
        for i, c in enumerate(_CHANNELS):
            blocks.append(_DenseBlock4(cin, c, first=i == 0))
            cin = c
        self.dense0, self.dense1, self.dense2, self.dense3 = blocks
        self.fc = nn.Linear(FEATURE_DIM, len(FACEAPI_CLASSES))

    def feature_map(self, x: torch.Tensor) -> torch.Tensor:
        """Normalised images ``N x 3 x 112 x 112`` -> the last block's map ``N x 256 x 7 x 7``."""
        if x.ndim != 4 or x.shape[1] != 3:
            raise ModelError(f"face-api expression net: expected an N x 3 x 112 x 112 input, got {tuple(x.shape)}")
        return self.dense3(self.dense2(self.dense1(self.dense0(x))))

    @staticmethod
    def pool(feature_map: torch.Tensor) -> torch.Tensor:
        # tf.avgPool([7, 7], [2, 2], 'valid'): 7x7 -> 1x1 at 112 px
        return F.avg_pool2d(feature_map, 7, stride=2).flatten(1)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Normalised images ``N x 3 x 112 x 112`` -> features ``N x 256``."""
        return self.pool(self.feature_map(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(x))


# -- TensorFlow.js weights -----------------------------------------------------------------


def expected_tensors() -> dict[str, tuple[int, ...]]:
    """Every tensor name the manifest must hold, with its TF shape (in the net's order)."""
    shapes: dict[str, tuple[int, ...]] = {}
    cin = 3
    for i, c in enumerate(_CHANNELS):
        for j in range(4):
            prefix = f"dense{i}/conv{j}"
            src = cin if j == 0 else c
            if i == 0 and j == 0:
                shapes[f"{prefix}/filters"] = (3, 3, src, c)
            else:
                shapes[f"{prefix}/depthwise_filter"] = (3, 3, src, 1)
                shapes[f"{prefix}/pointwise_filter"] = (1, 1, src, c)
            shapes[f"{prefix}/bias"] = (c,)
        cin = c
    shapes["fc/weights"] = (FEATURE_DIM, len(FACEAPI_CLASSES))
    shapes["fc/bias"] = (len(FACEAPI_CLASSES),)
    return shapes


_DTYPES = {"float32": np.float32, "int32": np.int32}
_QUANT = {"uint8": np.uint8, "uint16": np.uint16, "float16": np.float16}


def read_tfjs_weights(bin_path, manifest_path) -> dict[str, np.ndarray]:
    """Decode a TensorFlow.js weights manifest + one ``.bin`` into float32 arrays by name.

    Parameters
    ----------
    bin_path : path
        The weights file (all groups' bytes; face-api's expression model has one group, one file).
    manifest_path : path
        ``*-weights_manifest.json``.

    Raises
    ------
    ModelError
        Unreadable manifest, an unknown dtype, or a ``.bin`` whose size does not match what
        the manifest describes (names the file and both byte counts).
    """
    bin_path, manifest_path = Path(bin_path), Path(manifest_path)
    try:
        manifest = json.loads(manifest_path.read_text())
    except (OSError, ValueError) as exc:
        raise ModelError(f"{manifest_path}: not a readable TensorFlow.js weights manifest ({exc})") from None
    if not isinstance(manifest, list) or not all(isinstance(g, dict) and "weights" in g for g in manifest):
        raise ModelError(f"{manifest_path}: expected a JSON list of groups with 'weights', as TensorFlow.js writes")
    try:
        data = bin_path.read_bytes()
    except OSError as exc:
        raise ModelError(f"{bin_path}: cannot read the weights file ({exc})") from None
    out: dict[str, np.ndarray] = {}
    offset = 0
    for group in manifest:
        for entry in group["weights"]:
            name, shape = entry.get("name"), tuple(int(s) for s in entry.get("shape", ()))
            count = int(np.prod(shape)) if shape else 1
            quant = entry.get("quantization")
            if quant:
                qdtype = _QUANT.get(quant.get("dtype"))
                if qdtype is None:
                    raise ModelError(f"{manifest_path}: tensor {name!r} has unsupported quantization {quant.get('dtype')!r}")
                nbytes = count * np.dtype(qdtype).itemsize
                raw = np.frombuffer(data, dtype=qdtype, count=count, offset=offset) if offset + nbytes <= len(data) else None
                if raw is not None:
                    if qdtype is np.float16:
                        values = raw.astype(np.float32)
                    else:
                        values = raw.astype(np.float32) * float(quant["scale"]) + float(quant["min"])
            else:
                dtype = _DTYPES.get(entry.get("dtype", "float32"))
                if dtype is None:
                    raise ModelError(f"{manifest_path}: tensor {name!r} has unsupported dtype {entry.get('dtype')!r}")
                nbytes = count * np.dtype(dtype).itemsize
                raw = np.frombuffer(data, dtype="<" + np.dtype(dtype).str[1:], count=count, offset=offset) \
                    if offset + nbytes <= len(data) else None
                if raw is not None:
                    values = raw.astype(np.float32)
            if raw is None:
                raise ModelError(
                    f"{bin_path}: {len(data)} bytes end inside tensor {name!r} (needs bytes {offset}..{offset + nbytes}); "
                    f"the .bin does not belong to {manifest_path.name} or is truncated"
                )
            out[name] = values.reshape(shape)
            offset += nbytes
    if offset != len(data):
        raise ModelError(
            f"{bin_path}: {len(data)} bytes but {manifest_path.name} describes {offset}; the .bin does not belong to it"
        )
    return out


def _torch_state(tensors: Mapping[str, np.ndarray]) -> dict[str, torch.Tensor]:
    """TF-layout arrays -> the state dict of :class:`FaceExpressionNet`; every tensor consumed once."""
    expected = expected_tensors()
    missing = [n for n in expected if n not in tensors]
    extra = [n for n in tensors if n not in expected]
    if missing or extra:
        raise ModelError(
            "face-api expression weights do not match FaceExpressionNet: "
            + (f"missing {missing[:4]}{'...' if len(missing) > 4 else ''}" if missing else "")
            + ("; " if missing and extra else "")
            + (f"unexpected {extra[:4]}{'...' if len(extra) > 4 else ''}" if extra else "")
        )
    for name, shape in expected.items():
        if tuple(tensors[name].shape) != shape:
            raise ModelError(f"face-api tensor {name!r} has shape {tuple(tensors[name].shape)}, expected {shape}")
    state = {}
    for name, arr in tensors.items():
        t = torch.from_numpy(np.ascontiguousarray(arr, dtype=np.float32))
        block, _, rest = name.partition("/")
        if block == "fc":
            state["fc.weight" if rest == "weights" else "fc.bias"] = t.T.contiguous() if rest == "weights" else t
            continue
        conv, _, kind = rest.partition("/")
        key = f"{block}.{conv}"
        if kind == "filters":  # [kh, kw, in, out] -> [out, in, kh, kw]
            state[f"{key}.conv.weight"] = t.permute(3, 2, 0, 1).contiguous()
        elif kind == "depthwise_filter":  # [kh, kw, in, 1] -> [in, 1, kh, kw]
            state[f"{key}.depthwise.weight"] = t.permute(2, 3, 0, 1).contiguous()
        elif kind == "pointwise_filter":  # [1, 1, in, out] -> [out, in, 1, 1]
            state[f"{key}.pointwise.weight"] = t.permute(3, 2, 0, 1).contiguous()
        elif kind == "bias":
            first = block == "dense0" and conv == "conv0"
            state[f"{key}.conv.bias" if first else f"{key}.pointwise.bias"] = t
    return state


# -- the affectlab method ----------------------------------------------------------------------


class FaceApiExpressionConfig(MethodConfig):
    """Where the weights came from (informative; the weights travel in the model file).

    Attributes
    ----------
    source : str
        URL or path of the ``.bin`` the weights were converted from.
    sha256 : str
        Its sha256.
    """

    source: str = ""
    sha256: str = Field("", pattern=r"^([0-9a-f]{64})?$")


class FaceApiBackbone(Backbone):
    """The face-api net as an affectlab :class:`~affectlab.features.backbones.Backbone`.

    Takes ``N x 3 x 112 x 112`` RGB in [0, 1] (face-api's mean is subtracted here) and returns
    ``{"global": N x 256, "map": N x 256 x 7 x 7}``. It is the ``backbone`` of
    :class:`FaceApiExpression`, so ``--backbone run:MODEL.ckpt`` of an imported
    ``faceapi:expression`` extracts these features (``affectlab extract``, AURA, probes).
    ``net`` holds the whole :class:`FaceExpressionNet`, classifier included.
    """

    def __init__(self):
        super().__init__(
            name="faceapi:expression",
            out_dim=FEATURE_DIM,
            map_channels=_CHANNELS[-1],
            preprocessing=Preprocessing.from_dict(faceapi_preprocessing()),
        )
        self.net = FaceExpressionNet()
        self.register_buffer(
            "mean", torch.tensor([m / 255.0 for m in FACEAPI_MEAN_RGB]).view(1, 3, 1, 1), persistent=False
        )

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        fmap = self.net.feature_map(x - self.mean.to(x.dtype))
        return {"global": self.net.pool(fmap), "map": fmap}


def faceapi_label_space() -> LabelSpace:
    """The 7 face-api expressions in affectlab's canonical order (no contempt)."""
    return LabelSpace(expressions=tuple(e for e in EXPRESSIONS if e in FACEAPI_EXPRESSIONS))


@register_method("faceapi")
class FaceApiExpression(Method):
    """Inference-only method around :class:`FaceExpressionNet`.

    Input ``batch["image"]``: ``N x 3 x 112 x 112`` RGB in [0, 1] (:func:`faceapi_preprocessing`);
    the method applies face-api's mean itself. ``forward`` returns ``expr_logits`` in the label
    space's (canonical) order and ``extras["features"]`` (``N x 256``). :meth:`features` gives
    the features alone, for distillation or linear probes.
    """

    Config = FaceApiExpressionConfig
    input_kind = "image"
    trainable = False

    def __init__(self, label_space: LabelSpace | None = None, config: FaceApiExpressionConfig | Mapping[str, Any] | None = None):
        label_space = label_space or faceapi_label_space()
        super().__init__(label_space, config)
        unknown = [e for e in label_space.expressions if e not in FACEAPI_EXPRESSIONS]
        if unknown or label_space.va or label_space.aus:
            raise ModelError(
                f"face-api expression net predicts only {', '.join(FACEAPI_EXPRESSIONS)}; the label space asks for "
                f"{', '.join(unknown + (['valence/arousal'] if label_space.va else []) + list(label_space.aus))}"
            )
        self.backbone = FaceApiBackbone()
        self.register_buffer(
            "column",
            torch.tensor([FACEAPI_EXPRESSIONS.index(e) for e in label_space.expressions], dtype=torch.long),
            persistent=False,
        )
        self.preprocessing = faceapi_preprocessing()

    @property
    def net(self) -> FaceExpressionNet:
        """The ported network (takes face-api-normalised input; see :class:`FaceExpressionNet`)."""
        return self.backbone.net

    @property
    def mean(self) -> torch.Tensor:
        """face-api's RGB mean on the [0, 1] scale, ``1 x 3 x 1 x 1``."""
        return self.backbone.mean

    def features(self, image: torch.Tensor) -> torch.Tensor:
        """Images ``N x 3 x 112 x 112`` in [0, 1] -> ``N x 256`` features."""
        return self.backbone(image)["global"]

    def forward(self, batch: Mapping[str, torch.Tensor]) -> Outputs:
        image = batch.get("image") if isinstance(batch, Mapping) else None
        if image is None:
            raise ModelError("the face-api expression net needs batch['image'] (pixels [B, 3, 112, 112])")
        feats = self.features(image)
        logits = self.net.fc(feats)
        return Outputs(expr_logits=logits[:, self.column], extras={"features": feats})

    def loss(self, outputs: Outputs, batch: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        raise ModelError(
            "the face-api expression net is for inference only; use it as a teacher or a frozen feature extractor"
        )


def load_faceapi_expression(bin_path, manifest_path, *, source: str = "", sha256: str = "") -> FaceApiExpression:
    """Build a :class:`FaceApiExpression` (eval mode) from face-api's weights files.

    Parameters
    ----------
    bin_path : path
        ``face_expression_model.bin``.
    manifest_path : path
        ``face_expression_model-weights_manifest.json``.
    source, sha256 : str
        Recorded in the method's config.

    Returns
    -------
    FaceApiExpression
        Ready for :meth:`affectlab.runtime.predictor.Predictor.from_method` (its ``preprocessing``
        attribute gives face-api's input normalisation).

    Raises
    ------
    ModelError
        Files that do not decode into exactly the network's tensors.
    """
    state = _torch_state(read_tfjs_weights(bin_path, manifest_path))
    method = FaceApiExpression(config={"source": source or str(bin_path), "sha256": sha256})
    result = method.net.load_state_dict(state, strict=True)
    assert not result.missing_keys and not result.unexpected_keys  # strict=True raised otherwise
    return method.eval()


__all__ = [
    "FACEAPI_CLASSES",
    "FACEAPI_EXPRESSIONS",
    "FACEAPI_FRAMING",
    "FaceApiBackbone",
    "FaceApiExpression",
    "FaceExpressionNet",
    "expected_tensors",
    "faceapi_label_space",
    "faceapi_preprocessing",
    "load_faceapi_expression",
    "read_tfjs_weights",
]
