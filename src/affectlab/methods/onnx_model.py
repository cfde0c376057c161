"""An ONNX expression / valence-arousal model wrapped as an affectlab method.

The ONNX graph travels inside the affectlab model file: its bytes are a ``uint8``
buffer of the module, so an imported model is one ordinary ``model.ckpt`` that
:func:`affectlab.runtime.hub.load_model`, :class:`affectlab.runtime.predictor.Predictor`,
``affectlab analyze``, ``evaluate`` and ``explain`` load like any trained run.
Inference runs in onnxruntime on the CPU.

The graph takes one float32 ``N x 3 x S x S`` input (RGB, normalised with the
preprocessing stored in the model file) and returns ``N x (C [+ 2])`` scores: ``C``
expression logits in the order of :attr:`OnnxModelConfig.classes`, optionally followed
by valence and arousal. Logits are re-ordered into the canonical affectlab order, so
every downstream tool sees ``label_space.expressions`` as usual.
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np
import torch
from pydantic import Field

from affectlab.data.schema import EXPRESSIONS, LabelSpace, canonical_expression
from affectlab.errors import ModelError
from affectlab.methods.base import Method, MethodConfig, Outputs, register_method


class OnnxModelConfig(MethodConfig):
    """What an ONNX graph's input and output mean.

    Attributes
    ----------
    onnx_bytes : int
        Size of the serialised graph (the buffer holding it has this many bytes).
    classes : list of str
        Expression names in the order of the graph's output columns (any spelling
        :func:`affectlab.data.schema.canonical_expression` knows).
    va_outputs : bool
        The two columns after the expression logits are valence and arousal.
    input_name : str
        Name of the graph's image input.
    source : str
        Where the graph came from (informative).
    """

    onnx_bytes: int = Field(1, ge=1)
    classes: list[str] = Field(default_factory=lambda: list(EXPRESSIONS))
    va_outputs: bool = False
    input_name: str = "input"
    source: str = ""


def label_space_for(classes, va_outputs: bool) -> LabelSpace:
    """The affectlab label space of a graph with these output classes (canonical order)."""
    names = {canonical_expression(c) for c in classes}
    ordered = tuple(e for e in EXPRESSIONS if e in names)
    return LabelSpace(expressions=ordered, va=bool(va_outputs))


@register_method("onnx")
class OnnxModel(Method):
    """Inference-only method running an ONNX graph (see the module docstring)."""

    Config = OnnxModelConfig
    input_kind = "image"
    trainable = False

    def __init__(self, label_space: LabelSpace, config: OnnxModelConfig | Mapping[str, Any] | None = None):
        super().__init__(label_space, config)
        cfg = self.config
        canon = [canonical_expression(c) for c in cfg.classes]
        if len(set(canon)) != len(canon):
            raise ModelError(f"onnx model: duplicate classes {cfg.classes}")
        missing = [e for e in label_space.expressions if e not in canon]
        if missing:
            raise ModelError(f"onnx model: label space classes {missing} are not among the graph's outputs {canon}")
        if label_space.va and not cfg.va_outputs:
            raise ModelError("onnx model: the label space has valence/arousal but the graph has no VA outputs")
        # column of the graph output for each label-space class, in label-space order
        self.register_buffer(
            "column", torch.tensor([canon.index(e) for e in label_space.expressions], dtype=torch.long), persistent=False
        )
        self.register_buffer("onnx_model", torch.zeros(cfg.onnx_bytes, dtype=torch.uint8))
        self._session = None
        self._session_key = None

    @classmethod
    def from_onnx(cls, data: bytes, classes, *, va_outputs: bool = False, input_name: str = "input", source: str = ""):
        """Build the method around a serialised ONNX graph (``bytes``)."""
        space = label_space_for(classes, va_outputs)
        method = cls(
            space,
            {"onnx_bytes": len(data), "classes": list(classes), "va_outputs": va_outputs, "input_name": input_name,
             "source": source},
        )
        method.onnx_model.copy_(torch.frombuffer(bytearray(data), dtype=torch.uint8))
        return method.eval()

    def session(self):
        """The onnxruntime session of the stored graph (built on first use, rebuilt if the bytes change)."""
        try:
            import onnxruntime as ort
        except ImportError:  # pragma: no cover - onnxruntime is in the onnx extra
            raise ModelError("ONNX models need onnxruntime: pip install 'affectlab[onnx]'") from None
        key = (self.onnx_model.data_ptr(), int(self.onnx_model[:64].sum()), int(self.onnx_model[-64:].sum()))
        if self._session is None or self._session_key != key:
            options = ort.SessionOptions()
            options.log_severity_level = 3
            try:
                self._session = ort.InferenceSession(
                    self.onnx_model.numpy().tobytes(), options, providers=["CPUExecutionProvider"]
                )
            except Exception as exc:
                raise ModelError(f"onnx model: onnxruntime cannot load the stored graph ({exc})") from None
            self._session_key = key
        return self._session

    def __deepcopy__(self, memo):
        # an onnxruntime session cannot be copied; the copy rebuilds its own on first use
        clone = type(self)(self.label_space, self.config)
        clone.load_state_dict(self.state_dict())
        return clone.train(self.training)

    def forward(self, batch: Mapping[str, torch.Tensor]) -> Outputs:
        image = batch.get("image") if isinstance(batch, Mapping) else None
        if not torch.is_tensor(image) or image.ndim != 4 or image.shape[1] != 3:
            what = f"shape {tuple(image.shape)}" if torch.is_tensor(image) else "no image"
            raise ModelError(f"onnx model: needs batch['image'] as [B, 3, H, W] pixels, got {what}")
        x = np.ascontiguousarray(image.detach().cpu().numpy(), dtype=np.float32)
        out = self.session().run(None, {self.config.input_name: x})[0]
        out = torch.from_numpy(np.asarray(out, dtype=np.float32)).to(image.device)
        n = len(self.config.classes)
        expected = n + (2 if self.config.va_outputs else 0)
        if out.ndim != 2 or out.shape[1] != expected:
            raise ModelError(f"onnx model: expected output N x {expected}, got {tuple(out.shape)}")
        logits = out[:, self.column.to(out.device)] if self.label_space.expressions else None
        va = out[:, n : n + 2].clamp(-1.0, 1.0) if self.label_space.va else None
        return Outputs(expr_logits=logits, va=va)

    def loss(self, outputs: Outputs, batch: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        raise ModelError("imported ONNX models are for inference only; train an affectlab method instead")
