"""The layer shapes of the zoo models (weights_tools.zoo.ARCHS) at a given input size, per
kernel family, as the engine runs them: the parameters of qbinfer._core._bench.KernelBench."""

from __future__ import annotations

from typing import Dict, List, Tuple


def layer_shapes(
    name: str, size: int = 224, classes: int = 1000
) -> List[Tuple[str, Dict[str, int]]]:
    """(family, params) for every kernel call of one image, in order (duplicates kept)."""
    from weights_tools.zoo import ARCHS

    arch = ARCHS[name]
    c = arch.stem_channels
    h = w = (size + 2 - 3) // 2 + 1
    out: List[Tuple[str, Dict[str, int]]] = [
        ("conv2d", dict(h=size, w=size, ci=3, co=c, k=3, stride=2))
    ]
    for _, stages in arch.stage_specs():
        for (sh, sw), m in stages:
            k = arch.kernel_rule.kernel_size(c, c * m)
            out.append(("dwconv_f32", dict(h=h, w=w, c=c, sh=sh, sw=sw, multiplier=m)))
            h, w = -(-h // sh), -(-w // sw)
            # DS tail: + shortcut (repeated m times), PReLU, BN, bits for the binary conv.
            out.append(
                ("epilogue", dict(pixels=h * w, channels=c * m, residual_channels=c, bits=1))
            )
            c *= m
            out.append(("bconv", dict(h=h, w=w, ci=c, co=c, k=k)))
            # B tail: + residual, PReLU, BN (floats for the next DS half).
            out.append(("epilogue", dict(pixels=h * w, channels=c, residual_channels=c, bits=0)))
    out.append(("fc_f32", dict(ci=c, co=classes)))
    return out


def unique_shapes(names, size: int = 224) -> List[Tuple[str, Dict[str, int], List[str]]]:
    """Distinct (family, params) over the models, with the models that use each."""
    seen: Dict[Tuple[str, Tuple], Tuple[str, Dict[str, int], List[str]]] = {}
    for name in names:
        for family, params in layer_shapes(name, size):
            key = (family, tuple(sorted(params.items())))
            if key not in seen:
                seen[key] = (family, params, [])
            if name not in seen[key][2]:
                seen[key][2].append(name)
    return list(seen.values())


def shape_id(family: str, p: Dict[str, int]) -> str:
    if family == "bconv":
        return f"bconv{p['k']}x{p['k']}-{p['h']}x{p['w']}x{p['ci']}-{p['co']}"
    if family.startswith("dwconv"):
        return (
            f"{family}-{p['h']}x{p['w']}x{p['c']}-s{p.get('sh', 1)}{p.get('sw', 1)}"
            f"-m{p.get('multiplier', 1)}"
        )
    if family == "conv2d":
        return f"conv2d{p['k']}x{p['k']}s{p['stride']}-{p['h']}x{p['w']}x{p['ci']}-{p['co']}"
    if family.startswith("fc"):
        return f"{family}-{p['ci']}-{p['co']}"
    if family == "epilogue":
        return (
            f"epilogue-{p['pixels']}x{p['channels']}-r{p['residual_channels']}"
            f"{'-bits' if p.get('bits') else ''}"
        )
    return family + "-" + "-".join(f"{k}{v}" for k, v in sorted(p.items()))
