"""Operation counts, parameters and storage of the zoo, beside the paper's Tables 2 and 3.

    python -m weights_tools.ops            # a table for every zoo model (224x224, 1000 classes)
    python -m weights_tools.ops --json     # the same as JSON
    python -m weights_tools.ops --layers qb_net_small   # per-layer breakdown of one model

Counting convention (per single image; docs/ops.md explains it and the paper differences):

- BOPs: multiply-accumulates of the binary convolutions (`BinaryConv2d`):
  C_out * C_in * k * k * H_out * W_out; of the published BNNs' binary convs and FCs (layers
  marked `binary_macs`, see `is_binary_layer`): weight count * H_out * W_out.
- FLOPs: multiply-accumulates of every float layer with weights: the stem conv, the depthwise
  convs (C_out * 9 * H_out * W_out), the two 1x1 layers of each SE, and the FC (in * out).
  Element-wise work (BN, PReLU, biases, shortcut adds, pooling, sign, SE's pooling and scaling) is
  not counted: once BN and alpha are folded it is a handful of operations per activation.
- OPs = FLOPs + BOPs / 64 (paper §3).
- Parameters: every learnable parameter (BN running statistics are not parameters).
- Storage, "full": what a deployed model needs: binary conv weights at 1 bit, every other
  learnable parameter as FP32 (BN at inference is two numbers per channel, like its two learnable
  parameters), and the FC weight in the chosen encoding:
    fp32      4 bytes per weight;
    int8      1 byte per weight + an FP32 scale per output;
    bitplane8 8 sign planes of 1 bit per weight + an FP32 scale per output (paper A.2) — the
              same bytes as int8, computed with binary ops instead of 8-bit arithmetic.
  The FC bias is FP32 in every encoding. The SE FCs' weights as the model holds them
  (`se_weights` of the zoo, `layers.SqueezeExcite`):
    fp32      4 bytes per weight;
    int8      1 byte per weight + an FP32 scale per output row (the engine's FC int8 mode);
    binary    1 bit per weight + an FP32 scale per output row (FC binary mode; the scale is the
              layer's learnable alpha, so it is not counted again with the other parameters).
- Storage, "weights": conv and FC weights plus the FC bias only, in the same encodings. This is
  the convention that reproduces the paper's Table 3 (its figures leave out the per-channel
  vectors: biases, alpha, PReLU slopes, BN), so the comparison with the paper uses it.
Bytes are 10^6 per MB, the unit of the paper's "8.19 Mbytes" for the 2048x1000 FP32 FC.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict, dataclass, field
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

import torch
from torch import nn

from .bnn_zoo import BNN_ZOO, BNN_ZOO_NAMES
from .layers import BinaryConv2d, SqueezeExcite
from .zoo import (
    ABLATION_NAMES,
    ARCHS,
    MODEL_NAMES,
    SE_MODES,
    SE_WEIGHT_KINDS,
    BinaryNet,
    PaperFigures,
    build_model,
    get_arch,
)

__all__ = [
    "LayerCount",
    "ModelCount",
    "FC_ENCODINGS",
    "count_ops",
    "count_zoo",
    "is_binary_layer",
    "main",
]

FC_ENCODINGS = ("fp32", "int8", "bitplane8")


@dataclass
class LayerCount:
    name: str
    kind: str  # "binary_conv", "conv", "depthwise", "se", "fc"
    output_shape: Tuple[int, ...]
    flops: int = 0
    bops: int = 0


@dataclass
class ModelCount:
    model: str
    input_size: Tuple[int, int]
    num_classes: int
    flops: int
    bops: int
    params: int
    binary_params: int
    storage_bytes: Dict[str, int]
    weights_storage_bytes: Dict[str, int]
    layers: List[LayerCount] = field(default_factory=list)

    @property
    def ops(self) -> float:
        return self.flops + self.bops / 64


def is_binary_layer(module: nn.Module) -> bool:
    """True for a layer whose multiply-accumulates are binary (+-1 x +-1): the zoo's
    `BinaryConv2d`, or any module (the published BNNs of `bnn_zoo`: HardBinaryConv, XNOR-Net's
    conv, BinaryNet's FC) with a true `binary_macs` attribute."""
    return isinstance(module, BinaryConv2d) or bool(getattr(module, "binary_macs", False))


def _binary_weight(module: nn.Module) -> torch.Tensor:
    # Bi-Real Net and ReActNet keep their weights flat in `weights`; everything else in `weight`.
    weight = getattr(module, "weight", None)
    if not isinstance(weight, torch.Tensor):
        weight = getattr(module, "weights", None)
    if not isinstance(weight, torch.Tensor):
        raise ValueError(f"binary layer {type(module).__name__} has no weight or weights tensor")
    return weight


def _conv_kind(name: str, module: nn.Conv2d) -> str:
    if module.groups > 1 and module.groups == module.in_channels:
        return "depthwise"
    if ".se." in f".{name}.":
        return "se"
    return "conv"


def _fc_weight_bytes(fc: nn.Linear, encoding: str) -> int:
    out_f, in_f = fc.weight.shape
    if encoding == "fp32":
        return 4 * out_f * in_f
    if encoding in ("int8", "bitplane8"):
        # int8: one byte per weight; bitplane8: eight 1-bit planes per weight. Both carry an
        # FP32 scale per output channel.
        return out_f * in_f + 4 * out_f
    raise ValueError(f"unknown FC encoding {encoding!r}; known: {FC_ENCODINGS}")


@dataclass
class _SEWeights:
    """The SE FCs' weights of a model: count, output rows, and bytes as stored."""

    weights: int = 0
    scale_params: int = 0  # learnable per-row scales (binary SE's alpha), stored as the scale
    bytes: int = 0


def _se_weights(model: nn.Module) -> _SEWeights:
    out = _SEWeights()
    for se in model.modules():
        if not isinstance(se, SqueezeExcite):
            continue
        for conv in (se.reduce, se.expand):
            n, rows = conv.weight.numel(), conv.weight.shape[0]
            out.weights += n
            if se.weights == "fp32":
                out.bytes += 4 * n
            elif se.weights == "int8":
                out.bytes += n + 4 * rows
            else:  # binary: 1 bit per weight + the per-row scale (its alpha parameter)
                out.bytes += (n + 7) // 8 + 4 * rows
                out.scale_params += rows
    return out


def _final_linear(model: nn.Module) -> nn.Linear:
    if isinstance(model, BinaryNet):
        return model.fc
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise ValueError("model has no nn.Linear to treat as the FC head")
    return linears[-1]


def count_ops(
    model: nn.Module,
    input_size: Sequence[int] = (224, 224),
    name: Optional[str] = None,
    in_channels: int = 3,
) -> ModelCount:
    """Count one image's FLOPs/BOPs by running the model once with hooks on its weighted layers.

    Works for any model built from `BinaryConv2d`, `nn.Conv2d` and `nn.Linear`, not only the zoo,
    and for other binary layers marked with a true `binary_macs` attribute (`is_binary_layer`).
    """
    h, w = int(input_size[0]), int(input_size[1])
    layers: List[LayerCount] = []
    hooks = []

    def hook_for(layer_name: str, module: nn.Module):
        def hook(mod, inputs, output):
            spatial = output.shape[2] * output.shape[3] if output.dim() == 4 else 1
            if is_binary_layer(mod) and not isinstance(mod, BinaryConv2d):
                # Dense binary conv or FC: every weight is used once per output position.
                macs = _binary_weight(mod).numel() * spatial
                kind = "binary_conv" if output.dim() == 4 else "binary_fc"
                layers.append(LayerCount(layer_name, kind, tuple(output.shape[1:]), bops=macs))
            elif isinstance(mod, BinaryConv2d):
                macs = mod.out_channels * mod.in_channels * mod.kernel_size**2 * spatial
                layers.append(
                    LayerCount(layer_name, "binary_conv", tuple(output.shape[1:]), bops=macs)
                )
            elif isinstance(mod, nn.Conv2d):
                kh, kw = mod.kernel_size
                macs = mod.out_channels * (mod.in_channels // mod.groups) * kh * kw * spatial
                layers.append(
                    LayerCount(
                        layer_name, _conv_kind(layer_name, mod), tuple(output.shape[1:]), flops=macs
                    )
                )
            elif isinstance(mod, nn.Linear):
                layers.append(
                    LayerCount(
                        layer_name,
                        "fc",
                        tuple(output.shape[1:]),
                        flops=mod.in_features * mod.out_features,
                    )
                )

        return hook

    def se_hook_for(layer_name: str):
        # An SE with compact weights computes its two 1x1 layers with F.conv2d on the effective
        # weights, so its convs' own hooks do not fire: count them here (1x1 maps, so MACs =
        # weights), as the same float work.
        def hook(mod, inputs, output):
            if mod.weights == "fp32":
                return
            for which in ("reduce", "expand"):
                conv = getattr(mod, which)
                layers.append(
                    LayerCount(
                        f"{layer_name}.{which}",
                        "se",
                        (conv.out_channels, 1, 1),
                        flops=conv.weight.numel(),
                    )
                )

        return hook

    for layer_name, module in model.named_modules():
        if is_binary_layer(module) or isinstance(module, (nn.Conv2d, nn.Linear)):
            hooks.append(module.register_forward_hook(hook_for(layer_name, module)))
        elif isinstance(module, SqueezeExcite):
            hooks.append(module.register_forward_hook(se_hook_for(layer_name)))
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad():
            model(torch.zeros(1, in_channels, h, w))
    finally:
        for handle in hooks:
            handle.remove()
        model.train(was_training)

    fc = _final_linear(model)
    # Binary weights: layers with binary MACs, and layers that binarize only their weights
    # (BinaryNet's first FC: +-1 weights on a real image), stored at 1 bit either way.
    binary_layers = [
        m
        for m in model.modules()
        if is_binary_layer(m) or getattr(m, "binary_weights", False) is True
    ]
    binary_params = sum(_binary_weight(m).numel() for m in binary_layers)
    params = sum(p.numel() for p in model.parameters())
    fc_params = fc.weight.numel()
    fc_bias = fc.bias.numel() if fc.bias is not None else 0
    float_params = params - binary_params - fc_params - fc_bias
    float_weights = sum(
        m.weight.numel()
        for m in model.modules()
        if isinstance(m, nn.Conv2d) and not is_binary_layer(m)
    )
    binary_bytes = (binary_params + 7) // 8
    # The SE FCs' weights (and a binary SE's per-row scales) in their own encoding.
    se = _se_weights(model)
    float_params -= se.weights + se.scale_params
    float_weights -= se.weights
    storage = {
        e: binary_bytes + 4 * (float_params + fc_bias) + se.bytes + _fc_weight_bytes(fc, e)
        for e in FC_ENCODINGS
    }
    weights = {
        e: binary_bytes + 4 * (float_weights + fc_bias) + se.bytes + _fc_weight_bytes(fc, e)
        for e in FC_ENCODINGS
    }
    return ModelCount(
        model=name or getattr(model, "name", type(model).__name__),
        input_size=(h, w),
        num_classes=fc.out_features,
        flops=sum(l.flops for l in layers),
        bops=sum(l.bops for l in layers),
        params=params,
        binary_params=binary_params,
        storage_bytes=storage,
        weights_storage_bytes=weights,
        layers=layers,
    )


def _variants(
    names: Iterable[str],
    se_modes: Sequence[Optional[str]],
    se_weights: Sequence[str] = ("fp32",),
) -> List[Tuple[str, Optional[str], str]]:
    # The published BNNs have no SE variants: one entry each, whatever se_modes says; a model
    # without SE has no SE weights to vary.
    return [
        (n, se, kind)
        for n in names
        for se in ((None,) if n in BNN_ZOO else se_modes)
        for kind in (("fp32",) if se is None else se_weights)
    ]


def count_zoo(
    names: Optional[Sequence[str]] = None,
    se_modes: Sequence[Optional[str]] = SE_MODES,
    input_size: Sequence[int] = (224, 224),
    num_classes: int = 1000,
    se_weights: Sequence[str] = ("fp32",),
) -> List[ModelCount]:
    """Counts for the zoo: by default the four models and their SE1/SE2 variants, the ablations,
    then the published BNNs of `bnn_zoo` (ReActNet-A, Bi-Real Net, XNOR-Net, BinaryNet). A model
    with its own fixed input (BinaryNet's 28x28x1 MLP) is counted at that size and with its own
    number of classes (10). `se_weights`: the SE weight kinds to count for every SE variant
    ("fp32", "int8", "binary"; named e.g. qsb_net_large_se1_binary)."""
    for kind in se_weights:
        if kind not in SE_WEIGHT_KINDS:
            raise ValueError(f"unknown SE weight kind {kind!r}; known: {SE_WEIGHT_KINDS}")
    if names is None:
        pairs = (
            _variants(MODEL_NAMES, se_modes, se_weights)
            + _variants(ABLATION_NAMES, (None,))
            # qsb_net_large_se1 (Table 3's name) is counted above as qsb_net_large's SE1 variant.
            + _variants([n for n in BNN_ZOO_NAMES if n != "qsb_net_large_se1"], (None,))
        )
    else:
        pairs = _variants(names, se_modes, se_weights)
    out = []
    for name, se, kind in pairs:
        if name in BNN_ZOO:
            entry = BNN_ZOO[name]
            c, h, w = entry.input_shape
            if (h, w) == (224, 224):
                size, classes = tuple(input_size), num_classes
            else:
                size, classes = (h, w), entry.num_classes
            model = build_model(name, num_classes=classes)
            out.append(count_ops(model, size, in_channels=c))
            continue
        model = build_model(name, num_classes=num_classes, se=se, se_weights=kind)
        out.append(count_ops(model, input_size))
    return out


def paper_figures(model_name: str) -> Optional[PaperFigures]:
    """The paper's Table 2/3 figures for a zoo model name such as 'qsb_net_large_se1'."""
    for kind in SE_WEIGHT_KINDS:  # qsb_net_large_se1_binary: the paper's SE1 figures
        if model_name.endswith("_" + kind):
            model_name = model_name[: -len(kind) - 1]
            break
    for se in ("se1", "se2"):
        base = model_name[: -len(se) - 1]
        if model_name.endswith("_" + se) and base in ARCHS:
            # Also bnn_zoo's 'qsb_net_large_se1' (Table 3's name for this variant).
            return get_arch(base).paper.get(se)
    if model_name in BNN_ZOO:
        entry = BNN_ZOO[model_name]
        if entry.paper_ops_e8 is None:
            return None
        return PaperFigures(
            flops_e8=entry.paper_flops_e8,
            bops_e8=entry.paper_bops_e8,
            ops_e8=entry.paper_ops_e8,
            storage_mb_fp32_fc=entry.paper_storage_mb,
        )
    return get_arch(model_name).paper.get(None)


def _pct(ours: float, paper: Optional[float]) -> Optional[float]:
    if paper is None or paper == 0:
        return None
    return round(100.0 * (ours / paper - 1.0), 2)


def to_record(count: ModelCount, with_layers: bool = False) -> dict:
    """A JSON-ready dict: our numbers, the paper's and the relative difference in percent."""
    rec = asdict(count)
    if not with_layers:
        rec.pop("layers")
    rec["ops"] = count.ops
    paper = (
        paper_figures(count.model)
        if count.input_size == (224, 224) and count.num_classes == 1000
        else None
    )
    comparison = {}
    if paper is not None:
        pairs = {
            "flops": (count.flops / 1e8, paper.flops_e8),
            "bops": (count.bops / 1e8, paper.bops_e8),
            "ops": (count.ops / 1e8, paper.ops_e8),
            "storage_mb_fp32_fc": (
                count.weights_storage_bytes["fp32"] / 1e6,
                paper.storage_mb_fp32_fc,
            ),
            "storage_mb_int8_fc": (
                count.weights_storage_bytes["int8"] / 1e6,
                paper.storage_mb_int8_fc,
            ),
        }
        for key, (ours, theirs) in pairs.items():
            comparison[key] = {
                "ours": round(ours, 4),
                "paper": theirs,
                "diff_pct": _pct(ours, theirs),
            }
        comparison["top1_paper"] = paper.top1
    rec["paper"] = comparison
    return rec


def _fmt(x: Optional[float], spec: str) -> str:
    return "-" if x is None else format(x, spec)


def format_table(counts: Sequence[ModelCount]) -> str:
    head = (
        f"{'model':<25} {'FLOPs e8':>15} {'BOPs e8':>15} {'OPs e8':>15} {'params M':>9} "
        f"{'MB fp32 FC':>10} {'int8 FC':>8} {'bitpl8 FC':>9} {'MB weights fp32/int8 FC':>30}"
    )
    lines = [head, "-" * len(head)]
    for c in counts:
        rec = to_record(c)
        p = rec["paper"]

        def cell(key: str, ours: float, spec: str = ".3f", p: dict = p) -> str:
            if key in p and p[key]["paper"] is not None:
                return f"{ours:{spec}} ({p[key]['paper']:g}, {p[key]['diff_pct']:+.0f}%)"
            return f"{ours:{spec}}"

        mb = {e: c.storage_bytes[e] / 1e6 for e in FC_ENCODINGS}
        w32 = cell("storage_mb_fp32_fc", c.weights_storage_bytes["fp32"] / 1e6, ".2f")
        w8 = cell("storage_mb_int8_fc", c.weights_storage_bytes["int8"] / 1e6, ".2f")
        lines.append(
            f"{c.model:<25} {cell('flops', c.flops / 1e8):>15} {cell('bops', c.bops / 1e8, '.2f'):>15} "
            f"{cell('ops', c.ops / 1e8):>15} {c.params / 1e6:>9.2f} {mb['fp32']:>10.2f} {mb['int8']:>8.2f} "
            f"{mb['bitplane8']:>9.2f} {w32 + ' / ' + w8:>30}"
        )
    lines.append("")
    for c in counts:
        if c.input_size != counts[0].input_size or c.num_classes != counts[0].num_classes:
            h, w = c.input_size
            lines.append(
                f"{c.model}: counted at its own {h}x{w} input and {c.num_classes} classes."
            )
    lines.append(
        "In parentheses: the paper's value (Tables 2 and 3) and our difference. MB = 10^6 bytes."
    )
    lines.append(
        "MB fp32/int8/bitpl8 FC: full deployed storage; 'MB weights': conv+FC weights only, the"
    )
    lines.append("convention of the paper's Table 3. Convention and FLOP differences: docs/ops.md.")
    return "\n".join(lines)


def format_layers(count: ModelCount) -> str:
    lines = [
        f"{count.model} at {count.input_size[0]}x{count.input_size[1]}",
        f"{'layer':<40} {'kind':<12} {'output':<18} {'FLOPs':>12} {'BOPs':>13}",
    ]
    for l in count.layers:
        lines.append(
            f"{l.name:<40} {l.kind:<12} {'x'.join(map(str, l.output_shape)):<18} {l.flops:>12,} {l.bops:>13,}"
        )
    lines.append(f"{'total':<40} {'':<12} {'':<18} {count.flops:>12,} {count.bops:>13,}")
    return "\n".join(lines)


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m weights_tools.ops", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.add_argument(
        "--models",
        nargs="+",
        metavar="NAME",
        help="zoo names (default: the four models with SE variants, then the ablations)",
    )
    parser.add_argument(
        "--se",
        choices=["none", "se1", "se2", "all"],
        default="all",
        help="SE variants to count for --models (default: all)",
    )
    parser.add_argument(
        "--se-weights",
        nargs="+",
        choices=SE_WEIGHT_KINDS,
        default=list(SE_WEIGHT_KINDS),
        help="SE weight kinds to count for every SE variant (default: all; named e.g. "
        "qsb_net_large_se1_binary)",
    )
    parser.add_argument("--input-size", type=int, nargs=2, default=(224, 224), metavar=("H", "W"))
    parser.add_argument("--num-classes", type=int, default=1000)
    parser.add_argument("--layers", action="store_true", help="add a per-layer breakdown")
    args = parser.parse_args(argv)

    se_modes = {"none": (None,), "se1": ("se1",), "se2": ("se2",), "all": SE_MODES}[args.se]
    try:
        counts = count_zoo(
            args.models, se_modes, tuple(args.input_size), args.num_classes, args.se_weights
        )
    except ValueError as exc:
        parser.error(str(exc))
    if args.json:
        json.dump([to_record(c, with_layers=args.layers) for c in counts], sys.stdout, indent=1)
        sys.stdout.write("\n")
        return 0
    print(
        f"Per image, {args.input_size[0]}x{args.input_size[1]} input, {args.num_classes} classes."
    )
    print(format_table(counts))
    if args.layers:
        for c in counts:
            print()
            print(format_layers(c))
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except BrokenPipeError:  # e.g. piped into `head`
        sys.exit(0)
