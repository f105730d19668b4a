"""The model zoo: QB-Net and QSB-Net (paper Tables 1 and 5) and the ablation models (Tables 6, 7).

Architectures are data. A block is a tuple of stages, a stage is (stride, channel multiplier),
and a model is a stem width, a list of blocks and a rule that picks the binary kernel size. The
five block types of SPEC §1 are entries of `BLOCK_TYPES`; a new variant or ablation is a new
`ArchSpec`, not new code.

    >>> from weights_tools.zoo import build_model
    >>> model = build_model("qsb_net_large", num_classes=10, se="se1")
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Dict, Optional, Sequence, Tuple, Union

import torch
from torch import nn

from .layers import PADDING_MODES, SE_WEIGHT_KINDS, BinaryConv2d, Block, Stage

__all__ = [
    "BLOCK_TYPES",
    "StageSpec",
    "KernelRule",
    "ArchSpec",
    "PaperFigures",
    "ARCHS",
    "MODEL_NAMES",
    "ABLATION_NAMES",
    "SE_MODES",
    "SE_WEIGHT_KINDS",
    "BinaryNet",
    "build_model",
    "build_segmenter",  # noqa: F822 (module __getattr__ at the end)
    "get_arch",
    "set_training_stage",
    "with_overrides",
]

StageSpec = Tuple[Tuple[int, int], int]  # ((stride_h, stride_w), channel multiplier)

BLOCK_TYPES: Dict[str, Tuple[StageSpec, ...]] = {
    "N": (((1, 1), 1),),
    "D": (((2, 2), 2),),
    "Q": (((2, 2), 4),),
    "DS": (((2, 1), 2), ((1, 2), 1)),
    "QS": (((2, 1), 2), ((1, 2), 2)),
}

SE_MODES = (None, "se1", "se2")

BlockEntry = Union[str, Tuple[StageSpec, ...]]


@dataclass(frozen=True)
class KernelRule:
    """Chooses 3x3 or 1x1 for the binary conv of each B half.

    `on="ds_in"` (SPEC §1, the paper's rule): 3x3 when the DS half just before the B half had at
    most `max_channels` input channels. `on="b"`: 3x3 when the B half itself has at most
    `max_channels` channels (the wording of Ablations 4 and 5). `max_channels=0` gives 1x1
    everywhere (Ablation 2).
    """

    max_channels: int = 32
    on: str = "ds_in"

    def __post_init__(self) -> None:
        if self.on not in ("ds_in", "b"):
            raise ValueError(f"KernelRule.on must be 'ds_in' or 'b', got {self.on!r}")

    def kernel_size(self, ds_in_channels: int, b_channels: int) -> int:
        c = ds_in_channels if self.on == "ds_in" else b_channels
        return 3 if c <= self.max_channels else 1


@dataclass(frozen=True)
class PaperFigures:
    """What the paper reports for a model (ImageNet, 224x224, 1000 classes); None = not given."""

    top1: Optional[float] = None
    flops_e8: Optional[float] = None  # Table 2
    bops_e8: Optional[float] = None  # Table 2
    ops_e8: Optional[float] = None  # Table 2
    storage_mb_fp32_fc: Optional[float] = None  # Table 3
    storage_mb_int8_fc: Optional[float] = None  # Table 3, in parentheses


@dataclass(frozen=True)
class ArchSpec:
    name: str
    blocks: Tuple[BlockEntry, ...]
    stem_channels: int = 16
    kernel_rule: KernelRule = field(default_factory=KernelRule)
    se_reduction: int = 8
    se_weights: str = "fp32"  # the SE FCs' weights: "fp32", "int8" or "binary" (layers.py)
    description: str = ""
    paper: Dict[Optional[str], PaperFigures] = field(default_factory=dict)  # keyed by se mode

    def stage_specs(self) -> Tuple[Tuple[str, Tuple[StageSpec, ...]], ...]:
        """(kind, stages) for each block, with block-type names resolved."""
        out = []
        for entry in self.blocks:
            if isinstance(entry, str):
                if entry not in BLOCK_TYPES:
                    raise ValueError(
                        f"{self.name}: unknown block type {entry!r}; known: {sorted(BLOCK_TYPES)}"
                    )
                out.append((entry, BLOCK_TYPES[entry]))
            else:
                out.append(("custom", tuple(entry)))
        return tuple(out)


# Blocks 2..14 of Tables 1 and 5 (block 1 is the stem, 15-16 the head).
_QB_SMALL = ("N", "D", "N", "Q", "N", "Q", "N", "N", "N", "N", "N", "Q", "N")
_QB_LARGE = ("N", "D", "N", "Q", "N", "Q", "N", "Q", "N", "N", "N", "N", "N")


def _smooth(blocks: Sequence[BlockEntry]) -> Tuple[BlockEntry, ...]:
    """QB -> QSB: every D becomes DS and every Q becomes QS (smooth two-step downsampling)."""
    return tuple({"D": "DS", "Q": "QS"}.get(b, b) if isinstance(b, str) else b for b in blocks)


# Table 1's MobileNetV1/ReActNet column: 32-wide stem, a non-strided doubling 32->64, then
# doubling at each downsampling (Ablation 1).
_DOUBLE_IN_PLACE: Tuple[StageSpec, ...] = (((1, 1), 2),)
_ABLATION1 = (_DOUBLE_IN_PLACE, "D", "N", "D", "N", "D", "N", "N", "N", "N", "N", "D", "N")

ARCHS: Dict[str, ArchSpec] = {}


def _register(spec: ArchSpec) -> ArchSpec:
    ARCHS[spec.name] = spec
    return spec


_register(
    ArchSpec(
        "qb_net_small",
        _QB_SMALL,
        description="QB-Net-Small (Table 1)",
        paper={None: PaperFigures(66.9, 0.28, 9.3, 0.43, 9.8, 3.5)},
    )
)
_register(
    ArchSpec(
        "qb_net_large",
        _QB_LARGE,
        description="QB-Net-Large (Table 5)",
        paper={None: PaperFigures(69.8, 0.20, 15.5, 0.53, 12.0, 5.8)},
    )
)
_register(
    ArchSpec(
        "qsb_net_small",
        _smooth(_QB_SMALL),
        description="QSB-Net-Small (Table 1)",
        paper={None: PaperFigures(68.8, 0.36, 10.8, 0.53, 10.0, 3.9)},
    )
)
_register(
    ArchSpec(
        "qsb_net_large",
        _smooth(_QB_LARGE),
        description="QSB-Net-Large (Table 5)",
        paper={
            None: PaperFigures(70.6, 0.36, 16.9, 0.62, 12.3, 6.2),
            "se1": PaperFigures(71.1, 0.37, 16.9, 0.64, 12.4, 6.3),
            "se2": PaperFigures(71.2, 0.42, 16.9, 0.69),
        },
    )
)

MODEL_NAMES = ("qb_net_small", "qb_net_large", "qsb_net_small", "qsb_net_large")

# Ablations of Tables 6 and 7 (paper appendix A.5).
_register(
    ArchSpec(
        "ablation1",
        _ABLATION1,
        stem_channels=32,
        description="Ablation 1: MobileNetV1/ReActNet channel expansion, no quadrupling",
        paper={None: PaperFigures(top1=64.2)},
    )
)
_register(
    ArchSpec(
        "ablation2",
        _QB_SMALL,
        kernel_rule=KernelRule(max_channels=0),
        description="Ablation 2: QB-Net-Small with 1x1 binary convs at 16 and 32 channels",
        paper={None: PaperFigures(top1=66.7)},
    )
)
_register(
    ArchSpec(
        "ablation3",
        (_DOUBLE_IN_PLACE,) + _QB_SMALL[1:],
        stem_channels=8,
        description="Ablation 3: QB-Net-Small with an 8-channel stem doubled to 16",
        paper={None: PaperFigures(top1=66.3)},
    )
)
_register(
    ArchSpec(
        "ablation4",
        _QB_SMALL,
        kernel_rule=KernelRule(max_channels=128, on="b"),
        description="Ablation 4: QB-Net-Small with 3x3 binary convs at 16, 32 and 128 channels",
        paper={None: PaperFigures(top1=67.9)},
    )
)
_register(
    ArchSpec(
        "ablation5",
        _QB_LARGE,
        kernel_rule=KernelRule(max_channels=128, on="b"),
        description="Ablation 5: QB-Net-Large with 3x3 binary convs at 16, 32 and 128 channels",
        paper={None: PaperFigures(top1=70.0)},
    )
)
_register(
    ArchSpec(
        "ablation6",
        _QB_SMALL[:-2] + ((((2, 2), 8),), "N"),
        description="Ablation 6: QB-Net-Small with 4096 channels in the last two blocks",
        paper={None: PaperFigures(top1=69.5)},
    )
)
_register(
    ArchSpec(
        "ablation7",
        _smooth(_ABLATION1),
        stem_channels=32,
        description="Ablation 7: Ablation 1 with smooth downsampling",
        paper={None: PaperFigures(top1=70.5)},
    )
)

ABLATION_NAMES = tuple(n for n in ARCHS if n.startswith("ablation"))


def get_arch(name_or_spec: Union[str, ArchSpec]) -> ArchSpec:
    if isinstance(name_or_spec, ArchSpec):
        return name_or_spec
    try:
        return ARCHS[name_or_spec]
    except KeyError:
        raise ValueError(f"unknown model {name_or_spec!r}; known: {', '.join(ARCHS)}") from None


def _is_downsampling(stages: Sequence[StageSpec]) -> bool:
    return any(tuple(stride) != (1, 1) for stride, _ in stages)


class BinaryNet(nn.Module):
    """Stem -> blocks -> global average pool -> FC. `blocks[i]` is block i+2 of the paper's tables."""

    def __init__(
        self,
        arch: ArchSpec,
        num_classes: int = 1000,
        se: Optional[str] = None,
        padding: str = "zero",
        se_weights: Optional[str] = None,
    ):
        super().__init__()
        if se not in SE_MODES:
            raise ValueError(f"se must be one of {SE_MODES}, got {se!r}")
        se_weights = arch.se_weights if se_weights is None else se_weights
        if se_weights not in SE_WEIGHT_KINDS:
            raise ValueError(f"se_weights must be one of {SE_WEIGHT_KINDS}, got {se_weights!r}")
        if padding not in PADDING_MODES:
            raise ValueError(f"padding must be one of {PADDING_MODES}, got {padding!r}")
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        self.arch = arch
        self.se_mode = se
        self.se_weights = se_weights
        self.padding = padding
        self.num_classes = num_classes
        c = arch.stem_channels
        self.stem = nn.Sequential(
            nn.Conv2d(3, c, 3, stride=2, padding=1, bias=False),
            nn.BatchNorm2d(c),
            nn.ReLU(inplace=True),
        )
        blocks = []
        for kind, stages in arch.stage_specs():
            se_here = se == "se2" or (se == "se1" and _is_downsampling(stages))
            built = []
            for stride, multiplier in stages:
                k = arch.kernel_rule.kernel_size(c, c * multiplier)
                stage = Stage(
                    c,
                    stride,
                    multiplier,
                    k,
                    padding=padding,
                    se=se_here,
                    se_reduction=arch.se_reduction,
                    se_weights=se_weights,
                )
                built.append(stage)
                c = stage.out_channels
            blocks.append(Block(kind, built))
        self.blocks = nn.ModuleList(blocks)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(c, num_classes)
        self.features = c

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        for block in self.blocks:
            x = block(x)
        return self.fc(torch.flatten(self.pool(x), 1))

    @property
    def name(self) -> str:
        # e.g. qsb_net_large_se1, or qsb_net_large_se1_binary with binary SE weights
        name = self.arch.name + (f"_{self.se_mode}" if self.se_mode else "")
        if self.se_mode and self.se_weights != "fp32":
            name += f"_{self.se_weights}"
        return name


def set_training_stage(model: nn.Module, stage: int) -> nn.Module:
    """Stage 1 of the paper's recipe: binary activations, float weights. Stage 2: both binary.

    Applies to every `BinaryConv2d` in `model` (zoo or not) and returns the model.
    """
    if stage not in (1, 2):
        raise ValueError(f"training stage must be 1 or 2, got {stage}")
    for m in model.modules():
        if isinstance(m, BinaryConv2d):
            m.binary_weights = stage == 2
    return model


def build_model(
    name: Union[str, ArchSpec],
    num_classes: int = 1000,
    se: Optional[str] = None,
    padding: str = "zero",
    stage: int = 2,
    se_weights: Optional[str] = None,
) -> BinaryNet:
    """Build a zoo model by name (see `ARCHS`) or from an `ArchSpec`.

    `se`: None, "se1" (SE after the DS halves of downsampling blocks) or "se2" (after every DS
    half). `padding`: "zero" (PyTorch's convention for the 3x3 binary convs) or "one". `stage`:
    1 = float weights with binary activations (training stage 1), 2 = binary weights (stage 2 and
    inference). `se_weights`: how the SE FCs hold their weights, "fp32", "int8" or "binary"
    (sign x per-row scale, STE-trained; see `layers.SqueezeExcite`); None takes the
    architecture's (`ArchSpec.se_weights`, "fp32" for every zoo entry). The input size is free: any H, W >= 1 works (224 for ImageNet, 32 for CIFAR-like
    data). The published BNNs of `bnn_zoo.BNN_ZOO_NAMES` (reactnet_a, bireal_net18/34,
    xnor_net_resnet18, binarynet_mlp) are built by name too, with their authors' layout.
    """
    if isinstance(name, str) and name not in ARCHS:
        # The published BNNs (ReActNet, Bi-Real Net, XNOR-Net, BinaryNet) live in bnn_zoo,
        # imported here so that importing the zoo does not import them.
        from . import bnn_zoo

        if name in bnn_zoo.BNN_ZOO:
            if (se, padding, stage, se_weights) != (None, "zero", 2, None):
                raise ValueError(
                    f"{name} is a published network as its authors wrote it: "
                    "se, padding and stage options do not apply"
                )
            return bnn_zoo.build_bnn(name, num_classes=num_classes)  # type: ignore[return-value]
        known = ", ".join(list(ARCHS) + list(bnn_zoo.BNN_ZOO))
        raise ValueError(f"unknown model {name!r}; known: {known}")
    model = BinaryNet(
        get_arch(name), num_classes=num_classes, se=se, padding=padding, se_weights=se_weights
    )
    return set_training_stage(model, stage)


def with_overrides(name: Union[str, ArchSpec], **changes) -> ArchSpec:
    """A copy of an architecture with fields replaced, e.g. a new kernel rule for an ablation."""
    return dataclasses.replace(get_arch(name), **changes)


def __getattr__(name: str):
    # build_segmenter lives in seg_zoo, which imports this module: resolved on first use so
    # that either module can be imported first (PEP 562).
    if name == "build_segmenter":
        from .seg_zoo import build_segmenter

        return build_segmenter
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
