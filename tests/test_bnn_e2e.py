"""The BNNs people have, end to end: the suite's own ReActNet, Bi-Real Net, XNOR-Net and BinaryNet
style models (tests/bnn_styles.py) and the published networks of weights_tools.bnn_zoo in their
authors' layouts, with random weights and randomised BN, converted unchanged and run against
PyTorch eval on 32 random inputs each (the zoo's image networks at 224x224).

Judged image by image (conftest.assert_matches): the median image within 1e-4 relative L2, and
every image that differs holding a near-tie sign decision found by the reference interpreter.
"""

import numpy as np
import pytest

import qbinfer

torch = pytest.importorskip("torch", reason="building test models needs the tools extra")

import bnn_styles  # noqa: E402
from conftest import assert_matches, convert_model, torch_logits  # noqa: E402

from weights_tools.bnn_zoo import BNN_ZOO_NAMES  # noqa: E402
from weights_tools.table3_zoo import TABLE3_ZOO_NAMES  # noqa: E402
from weights_tools.zoo import build_model  # noqa: E402

SEED = 20261205
N_INPUTS = 32


def _inputs(shape, seed):
    return np.random.default_rng(seed).standard_normal((N_INPUTS, *shape)).astype(np.float32)


def _convert_and_judge(model, tmp_path, name, shape, seed):
    c, h, w = shape
    path, _ = convert_model(model, tmp_path, name, (h, w), in_channels=c)
    x = _inputs(shape, seed)
    engine = qbinfer.load(path).run(x)
    return assert_matches(engine, torch_logits(model, x), path, x, f"{name} (seed {seed})")


@pytest.mark.parametrize("style", sorted(bnn_styles.STYLES))
def test_style_model_converts_unchanged_and_matches_pytorch(style, tmp_path):
    seed = SEED + sorted(bnn_styles.STYLES).index(style)
    model = bnn_styles.randomize(bnn_styles.STYLES[style](), seed=seed)
    _convert_and_judge(model, tmp_path, style, bnn_styles.input_shape(model), seed)


# weights_tools.table3_zoo's networks (also in BNN_ZOO) run in tests/test_table3_zoo.py.
@pytest.mark.parametrize("name", [n for n in BNN_ZOO_NAMES if n not in TABLE3_ZOO_NAMES])
def test_published_network_converts_and_matches_pytorch(name, tmp_path):
    """Every published network of the zoo at its own input (224x224 images; BinaryNet's MLP on
    28x28x1), 1000 classes for the ImageNet networks as their authors build them."""
    seed = SEED + 100 + BNN_ZOO_NAMES.index(name)
    torch.manual_seed(seed)
    model = bnn_styles.randomize(build_model(name), seed=seed)
    shape = bnn_styles.input_shape(model)
    _convert_and_judge(model, tmp_path, name, shape, seed)
