"""Float teachers for knowledge distillation, and loading them from local checkpoint files.

The paper distils from a ResNet-34 (SPEC §2). `resnet18`, `resnet34`, `resnet50` here are
torchvision's ResNets with torchvision's parameter names, so a state_dict saved from
`torchvision.models.resnet34(weights=...)` loads into them without torchvision installed.
`cifar_resnet8` / `cifar_resnet20` (He et al.'s CIFAR ResNets: 3x3 stem, three stages of 16, 32, 64
channels) are teachers for small inputs such as the 32x32 digits; train one with
`python -m weights_tools.train --stage teacher --arch cifar_resnet20 ...`.

`load_teacher(path, arch, num_classes)` reads a local file (never a download) with
`weights_tools.checkpoint.read_state_dict`: a plain state_dict, or a dict holding one under "model"
or "state_dict"; a "module." prefix left by DistributedDataParallel is removed. Names that are not
defined here are looked up in torchvision when it is importable (`torchvision.models.get_model`).
"""

from __future__ import annotations

from typing import Callable, Dict, List, Optional, Sequence, Type, Union

import torch
from torch import nn

from .checkpoint import checkpoint_meta, read_state_dict

__all__ = ["TEACHER_ARCHS", "build_teacher", "load_teacher", "read_state_dict", "is_teacher_arch"]


def _conv3x3(cin: int, cout: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(
        self, cin: int, planes: int, stride: int = 1, downsample: Optional[nn.Module] = None
    ):
        super().__init__()
        self.conv1 = _conv3x3(cin, planes, stride)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = _conv3x3(planes, planes)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class Bottleneck(nn.Module):
    """torchvision's ResNet v1.5 bottleneck: the stride sits on the 3x3 conv."""

    expansion = 4

    def __init__(
        self, cin: int, planes: int, stride: int = 1, downsample: Optional[nn.Module] = None
    ):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = _conv3x3(planes, planes, stride)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * 4, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * 4)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


def _make_layer(block: Type[nn.Module], cin: int, planes: int, blocks: int, stride: int):
    downsample = None
    cout = planes * block.expansion  # type: ignore[attr-defined]
    if stride != 1 or cin != cout:
        downsample = nn.Sequential(
            nn.Conv2d(cin, cout, 1, stride=stride, bias=False), nn.BatchNorm2d(cout)
        )
    layers: List[nn.Module] = [block(cin, planes, stride, downsample)]
    layers += [block(cout, planes) for _ in range(1, blocks)]
    return nn.Sequential(*layers), cout


def _init(model: nn.Module) -> None:
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


class ResNet(nn.Module):
    """torchvision.models.ResNet's layout and parameter names (ImageNet stem: 7x7/2 + max pool)."""

    def __init__(self, block: Type[nn.Module], layers: Sequence[int], num_classes: int = 1000):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        c = 64
        self.layer1, c = _make_layer(block, c, 64, layers[0], 1)
        self.layer2, c = _make_layer(block, c, 128, layers[1], 2)
        self.layer3, c = _make_layer(block, c, 256, layers[2], 2)
        self.layer4, c = _make_layer(block, c, 512, layers[3], 2)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(c, num_classes)
        _init(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


class CifarResNet(nn.Module):
    """He et al.'s CIFAR ResNet (depth 6n+2): 3x3 stem, stages of 16, 32, 64 channels."""

    def __init__(self, depth: int, num_classes: int = 10, width: int = 16):
        super().__init__()
        if (depth - 2) % 6:
            raise ValueError(f"CIFAR ResNet depth must be 6n+2, got {depth}")
        n = (depth - 2) // 6
        self.conv1 = _conv3x3(3, width)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        c = width
        self.layer1, c = _make_layer(BasicBlock, c, width, n, 1)
        self.layer2, c = _make_layer(BasicBlock, c, 2 * width, n, 2)
        self.layer3, c = _make_layer(BasicBlock, c, 4 * width, n, 2)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(c, num_classes)
        _init(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.fc(torch.flatten(self.avgpool(x), 1))


TEACHER_ARCHS: Dict[str, Callable[[int], nn.Module]] = {
    "resnet18": lambda n: ResNet(BasicBlock, (2, 2, 2, 2), n),
    "resnet34": lambda n: ResNet(BasicBlock, (3, 4, 6, 3), n),
    "resnet50": lambda n: ResNet(Bottleneck, (3, 4, 6, 3), n),
    "cifar_resnet8": lambda n: CifarResNet(8, n),
    "cifar_resnet20": lambda n: CifarResNet(20, n),
}


def _torchvision_models():
    try:
        import torchvision.models as tvm  # noqa: F401
    except Exception:  # ImportError, or a torchvision built for another torch
        return None
    return tvm


def is_teacher_arch(name: str) -> bool:
    if name in TEACHER_ARCHS:
        return True
    tvm = _torchvision_models()
    return tvm is not None and name in tvm.list_models()


def build_teacher(name: str, num_classes: int) -> nn.Module:
    """A float teacher by name: one of `TEACHER_ARCHS`, else any torchvision model name when
    torchvision is importable."""
    if name in TEACHER_ARCHS:
        return TEACHER_ARCHS[name](num_classes)
    tvm = _torchvision_models()
    if tvm is not None and name in tvm.list_models():
        return tvm.get_model(name, weights=None, num_classes=num_classes)
    hint = "" if tvm is not None else " (torchvision is not importable, so only these)"
    raise ValueError(
        f"unknown teacher architecture {name!r}; known: {', '.join(TEACHER_ARCHS)}{hint}"
    )


def load_teacher(
    path: str, arch: Optional[str], num_classes: int, device: Union[str, torch.device] = "cpu"
) -> nn.Module:
    """Build `arch` (default: the arch recorded in a `weights_tools.train` checkpoint), load the
    weights of `path` strictly, freeze them, and return the model in eval mode on `device`."""
    if arch is None:
        arch = checkpoint_meta(path).get("arch")
        if not arch:
            raise ValueError(f"{path} records no architecture: pass --teacher-arch")
    model = build_teacher(arch, num_classes)
    state = read_state_dict(path)
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        raise ValueError(
            f"teacher checkpoint {path} does not fit {arch} with {num_classes} classes: {exc}"
        ) from None
    for p in model.parameters():
        p.requires_grad_(False)
    return model.to(device).eval()
