"""What the TorchScript ONNX exporter gets wrong in public BNN code, put right while it traces.

`weights_tools.convert.export_onnx` runs `torch.onnx.export` inside `faithful_tracing()`, which
fixes two ways the exported graph would silently compute something else than the model
(measured with torch 2.13):

1. ``t.data = f(t.data)`` (BinaryNet.pytorch's BinarizeConv2d / BinarizeLinear binarize their
   input and weights this way in forward). The tracer does not see ``.data``: ``t.data`` is an
   untraced alias, and assigning it changes the tensor's values but not the graph value that
   stands for ``t``, so the exported conv reads the unbinarized input. Under
   `faithful_tracing`, reading ``t.data`` while tracing gives ``t.detach()`` (traced, the same
   values and storage) and assigning it also makes ``t`` stand for the assigned value in the
   trace (``torch._C._set_value_trace``), so the graph computes what eager mode computes.
2. A custom ``torch.autograd.Function`` with several outputs whose forward computes them in
   another order than it returns them (XNOR-Net's BinActive: ``mean = mean(|x|)`` first,
   ``return x.sign(), mean``): the exporter wires the Function's outputs to the wrong traced
   values (the conv after it read the mean, not the sign). Under `faithful_tracing`, while
   tracing, ``Function.apply`` runs the Function's ``forward`` directly (with a stand-in
   ``ctx``), so its ops are traced like any other code. A Function with a ``symbolic``
   (its own ONNX export) is left to the exporter.

Both only act while the tracer runs; outside an export nothing changes.
"""

from __future__ import annotations

import contextlib
from typing import Any, Iterator


class _ExportContext:
    """A stand-in for the ``ctx`` of an autograd Function's forward, run outside autograd:
    what forward stores on it is kept and never used (no backward runs while exporting)."""

    needs_input_grad: tuple = ()
    materialize_grads = True

    def save_for_backward(self, *tensors: Any) -> None:
        self.saved_tensors = tensors

    def save_for_forward(self, *tensors: Any) -> None:
        pass

    def mark_dirty(self, *tensors: Any) -> None:
        pass

    def mark_non_differentiable(self, *tensors: Any) -> None:
        pass

    def set_materialize_grads(self, value: bool) -> None:
        self.materialize_grads = value


@contextlib.contextmanager
def faithful_tracing() -> Iterator[None]:
    """Within: `.data` reads and writes and multi-output autograd Functions are traced as
    eager mode computes them (see the module's doc)."""
    import torch
    from torch.overrides import TorchFunctionMode

    data_descriptor = torch._C.TensorBase.__dict__["data"]

    def tracing() -> bool:
        return torch._C._get_tracing_state() is not None

    class DataAssignmentsTraced(TorchFunctionMode):
        def __torch_function__(self, func, types, args=(), kwargs=None):  # type: ignore[override]
            kwargs = kwargs or {}
            if getattr(func, "__self__", None) is data_descriptor and tracing():
                name = getattr(func, "__name__", "")
                if name == "__get__":
                    return args[0].detach()
                if name == "__set__":
                    target, value = args
                    result = func(*args, **kwargs)
                    torch._C._set_value_trace(target, torch._C._get_value_trace(value))
                    return result
            return func(*args, **kwargs)

    function_class = torch.autograd.Function
    original_apply = function_class.__dict__["apply"]
    plain_setup_context = torch.autograd.function._SingleLevelFunction.setup_context

    def apply(cls, *args, **kwargs):
        if not tracing() or hasattr(cls, "symbolic"):
            return original_apply.__func__(cls, *args, **kwargs)
        with torch.no_grad():
            if cls.setup_context is not plain_setup_context:  # forward(*args), no ctx
                return cls.forward(*args, **kwargs)
            ctx = _ExportContext()
            ctx.needs_input_grad = tuple(False for _ in args)
            return cls.forward(ctx, *args, **kwargs)

    function_class.apply = classmethod(apply)  # type: ignore[assignment]
    try:
        with DataAssignmentsTraced():
            yield
    finally:
        function_class.apply = original_apply  # type: ignore[assignment]
