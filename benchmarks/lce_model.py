"""The zoo's QB-Net / QSB-Net in larq + Keras, converted for Larq Compute Engine (LCE).

Runs only in the separate LCE virtualenv (TensorFlow 2.16, tf-keras, larq, larq-compute-engine;
see benchmarks/lce_compare.py --setup), never in the project's environment, so it imports neither
torch nor qbinfer. The architecture comes in as a *plan* that lce_compare.py derives from
weights_tools.zoo's ArchSpec in the main environment:

    {"name": "qb_net_small", "input_size": 224, "num_classes": 1000, "stem_channels": 16,
     "stages": [[stride_h, stride_w, multiplier, binary_kernel], ...]}

so the stage list, the channel multipliers and the kernel rule are the zoo's own, not a copy.
Layer by layer it follows weights_tools/layers.py (SPEC §1):

    stem     Conv2D 3x3/2 (no bias) -> BN -> ReLU
    DS half  u = x + beta; k parallel FP32 DepthwiseConv2D 3x3 (stride s) -> Concatenate -> BN;
             shortcut x, AveragePooling2D(s) when strided, concatenated k times;
             BN(PReLU(v + shortcut))
    B half   z = ste_sign(y + gamma); t = BN(alpha * QuantConv2D(z)) (ste_sign weights,
             1x1 or 3x3 with zero padding, no bias); BN(PReLU(t + y))
    head     GlobalAveragePooling2D -> Dense(num_classes)

Differences that change no shape and no op count: TensorFlow's "same" padding at stride 2 on an
even size pads bottom/right by one instead of one on every side (PyTorch); BN epsilon is 1e-5 as
in PyTorch. Weights are random (seeded), BN statistics too, so no layer folds away.

    python benchmarks/lce_model.py --plan plan.json --out model.tflite   # prints a JSON summary
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import sys

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")  # larq needs Keras 2 (tf-keras) on TF 2.16
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402


def _imports():
    import larq as lq
    import tensorflow as tf

    return tf, lq


_CHANNEL_LAYERS = None


def _channel_layers():
    """Keras layers for x + b and x * a with one learnable value per channel (the zoo's
    LearnableBias and BinaryConv2d's alpha); defined once so every builder shares them."""
    global _CHANNEL_LAYERS
    if _CHANNEL_LAYERS is None:
        tf, _lq = _imports()
        layers = tf.keras.layers

        class ChannelBias(layers.Layer):
            def build(self, shape):
                self.b = self.add_weight(name="bias", shape=(shape[-1],), initializer="zeros")

            def call(self, x):
                return x + self.b

        class ChannelScale(layers.Layer):
            def build(self, shape):
                self.a = self.add_weight(name="alpha", shape=(shape[-1],), initializer="ones")

            def call(self, x):
                return x * self.a

        _CHANNEL_LAYERS = (ChannelBias, ChannelScale)
    return _CHANNEL_LAYERS


def build_keras(plan: dict, dw: str = "concat", seed: int = 0):
    """The Keras model of a plan. `dw="concat"`: k DepthwiseConv2D + Concatenate, as the zoo;
    `dw="multiplier"`: one DepthwiseConv2D(depth_multiplier=k), the idiomatic Keras form (the same
    network up to a channel permutation; the shortcut is repeated per channel to match)."""
    tf, lq = _imports()
    layers = tf.keras.layers
    eps = 1e-5

    ChannelBias, ChannelScale = _channel_layers()

    def bn(x):
        return layers.BatchNormalization(epsilon=eps)(x)

    def bprelu(x):
        return bn(layers.PReLU(shared_axes=[1, 2])(x))

    def squeeze_excite(v, channels):
        """The zoo's SqueezeExcite: v * sigmoid(W2 relu(W1 gap(v) + b1) + b2)."""
        hidden = max(1, channels // plan.get("se_reduction", 8))
        s = layers.GlobalAveragePooling2D(keepdims=True)(v)
        s = layers.Conv2D(hidden, 1, activation="relu")(s)
        s = layers.Conv2D(channels, 1, activation="sigmoid")(s)
        return layers.Multiply()([v, s])

    def ds_half(x, c, stride, k, se=False):
        u = ChannelBias()(x)
        if dw == "multiplier" or k == 1:
            v = layers.DepthwiseConv2D(
                3, strides=stride, padding="same", depth_multiplier=k, use_bias=False
            )(u)
        else:
            v = layers.Concatenate()(
                [
                    layers.DepthwiseConv2D(3, strides=stride, padding="same", use_bias=False)(u)
                    for _ in range(k)
                ]
            )
        v = bn(v)
        if se:
            v = squeeze_excite(v, c * k)
        s = x
        if tuple(stride) != (1, 1):
            s = layers.AveragePooling2D(pool_size=stride, strides=stride, padding="valid")(s)
        if k > 1:
            if dw == "multiplier":  # channel c*k + j holds conv j of channel c
                h, w = s.shape[1], s.shape[2]
                s = layers.Reshape((h, w, c * k))(
                    layers.Lambda(lambda t: tf.repeat(t, k, axis=-1))(s)
                )
            else:  # block j holds conv j of every channel
                s = layers.Concatenate()([s] * k)
        return bprelu(layers.Add()([v, s]))

    def b_half(y, c, kernel):
        z = ChannelBias()(y)
        t = lq.layers.QuantConv2D(
            c,
            kernel,
            padding="same",
            pad_values=0.0,
            use_bias=False,
            input_quantizer="ste_sign",
            kernel_quantizer="ste_sign",
            kernel_constraint="weight_clip",
        )(z)
        t = bn(ChannelScale()(t))
        return bprelu(layers.Add()([t, y]))

    n = plan["input_size"]
    inp = tf.keras.Input((n, n, 3), batch_size=1, name="image")
    c = plan["stem_channels"]
    x = layers.Conv2D(c, 3, strides=2, padding="same", use_bias=False)(inp)
    x = layers.ReLU()(bn(x))
    for sh, sw, k, kernel, *se in plan["stages"]:  # a 5th entry: SE in this DS half
        x = ds_half(x, c, (sh, sw), k, se=bool(se and se[0]))
        c *= k
        x = b_half(x, c, kernel)
    x = layers.GlobalAveragePooling2D()(x)
    out = layers.Dense(plan["num_classes"])(x)
    model = tf.keras.Model(inp, out, name=plan["name"])
    _randomize(model, seed)
    return model


# ----------------------------------------------------------------- the other Table 3 networks
# A plan {"name": ..., "kind": KIND, "input_size": 224, "num_classes": 1000} names one of these.
# Larq Zoo's own definitions where it has the network (as the paper's Table 3 did), Keras'
# applications for the FP32 MobileNets, and for the two networks Larq Zoo lacks in their
# ResNet-18 / MobileNetV1 form (XNOR-Net on ResNet-18, ReActNet-A) the layer sequence of
# weights_tools.bnn_zoo written in larq: binary convs as QuantConv2D with ste_sign on inputs and
# weights (LCE's binary conv), their per-channel weight scale as a channel multiply that the
# converter folds into the conv's output transform.
LARQ_ZOO = {
    "quicknet_small": ("sota", "QuickNetSmall"),
    "quicknet": ("sota", "QuickNet"),
    "quicknet_large": ("sota", "QuickNetLarge"),
    "real_to_bin_resnet18": ("literature", "RealToBinaryNet"),
    "bireal_net18": ("literature", "BiRealNet"),
}
KERAS_APPS = {"mobilenet_v1": "MobileNet", "mobilenet_v2": "MobileNetV2"}


def _binary_conv(lq, filters, kernel, stride=1):
    return lq.layers.QuantConv2D(
        filters,
        kernel,
        strides=stride,
        padding="same",
        pad_values=0.0,
        use_bias=False,
        input_quantizer="ste_sign",
        kernel_quantizer="ste_sign",
        kernel_constraint="weight_clip",
    )


def build_reactnet_a(n: int, num_classes: int):
    """weights_tools.bnn_zoo.ReActNet: FP32 3x3/2 stem + BN, 13 blocks of binary 3x3 and binary
    1x1 (two 1x1 convs concatenated where the width doubles), RSign as a channel bias before
    each sign, RPReLU (bias, PReLU, bias) after each shortcut add, average pool, FC."""
    tf, lq = _imports()
    layers = tf.keras.layers
    ChannelBias, ChannelScale = _channel_layers()
    widths = (32, 64, 128, 128, 256, 256) + (512,) * 6 + (1024, 1024)

    def bn(x):
        return layers.BatchNormalization(epsilon=1e-5)(x)

    def rprelu(x):
        return ChannelBias()(layers.PReLU(shared_axes=[1, 2])(ChannelBias()(x)))

    inp = tf.keras.Input((n, n, 3), batch_size=1, name="image")
    x = bn(layers.Conv2D(widths[0], 3, strides=2, padding="same", use_bias=False)(inp))
    for prev, width in zip(widths[:-1], widths[1:]):
        stride = 2 if prev != width and width != 64 else 1
        spatial = bn(ChannelScale()(_binary_conv(lq, prev, 3, stride)(ChannelBias()(x))))
        shortcut = layers.AveragePooling2D(2, 2)(x) if stride == 2 else x
        mid = rprelu(layers.Add()([shortcut, spatial]))
        bits = ChannelBias()(mid)
        halves = [
            layers.Add()([bn(ChannelScale()(_binary_conv(lq, prev, 1)(bits))), mid])
            for _ in range(width // prev)
        ]
        x = rprelu(halves[0] if len(halves) == 1 else layers.Concatenate()(halves))
    x = layers.GlobalAveragePooling2D()(x)
    return tf.keras.Model(inp, layers.Dense(num_classes)(x), name="reactnet_a")


def build_xnor_resnet18(n: int, num_classes: int):
    """weights_tools.bnn_zoo.XnorResNet (jiecaoyu's XNOR-Net layer on torchvision's ResNet-18):
    FP32 7x7/2 stem + BN + ReLU + 3x3/2 max pool; basic blocks of two BN -> sign -> binary 3x3
    (mean |W| scale, bias) -> ReLU; FP32 1x1 strided shortcut + BN where the shape changes."""
    tf, lq = _imports()
    layers = tf.keras.layers
    ChannelBias, ChannelScale = _channel_layers()

    def bin_conv(x, filters, stride):
        x = layers.BatchNormalization(epsilon=1e-4)(x)
        y = ChannelBias()(ChannelScale()(_binary_conv(lq, filters, 3, stride)(x)))
        return layers.ReLU()(y)

    inp = tf.keras.Input((n, n, 3), batch_size=1, name="image")
    x = layers.Conv2D(64, 7, strides=2, padding="same", use_bias=False)(inp)
    x = layers.ReLU()(layers.BatchNormalization(epsilon=1e-5)(x))
    x = layers.MaxPooling2D(3, 2, padding="same")(x)
    c = 64
    for planes, stride in ((64, 1), (128, 2), (256, 2), (512, 2)):
        for b in range(2):
            s = stride if b == 0 else 1
            residual = x
            if s != 1 or c != planes:
                residual = layers.Conv2D(planes, 1, strides=s, use_bias=False)(x)
                residual = layers.BatchNormalization(epsilon=1e-5)(residual)
            x = layers.Add()([bin_conv(bin_conv(x, planes, s), planes, 1), residual])
            c = planes
    x = layers.GlobalAveragePooling2D()(x)
    return tf.keras.Model(inp, layers.Dense(num_classes)(x), name="xnor_net_resnet18")


def build_named(plan: dict, seed: int = 0):
    """The Keras model of a plan that names a network (plan["kind"]), randomised (seeded)."""
    tf, lq = _imports()
    n, classes, kind = plan["input_size"], plan["num_classes"], plan["kind"]
    if kind in LARQ_ZOO:
        import importlib

        module, cls = LARQ_ZOO[kind]
        zoo = importlib.import_module(f"larq_zoo.{module}")
        model = getattr(zoo, cls)(input_shape=(n, n, 3), weights=None, num_classes=classes)
        # Larq Zoo's models take any batch; LCE's converter wants the batch fixed at 1 as for
        # every other plan, so the model is called on a batch-1 input.
        inp = tf.keras.Input((n, n, 3), batch_size=1, name="image")
        model = tf.keras.Model(inp, model(inp), name=kind)
    elif kind in KERAS_APPS:
        app = getattr(tf.keras.applications, KERAS_APPS[kind])
        inp = tf.keras.Input((n, n, 3), batch_size=1, name="image")
        model = app(input_tensor=inp, weights=None, classes=classes, classifier_activation=None)
    elif kind == "reactnet_a":
        model = build_reactnet_a(n, classes)
    elif kind == "xnor_net_resnet18":
        model = build_xnor_resnet18(n, classes)
    else:
        raise ValueError(f"unknown network kind {kind!r}")
    _randomize(model, seed)
    return model


def _leaf_layers(model):
    """Every layer of `model`, nested models (Larq Zoo's, wrapped for batch 1) opened up."""
    for layer in model.layers:
        if hasattr(layer, "layers"):
            yield from _leaf_layers(layer)
        else:
            yield layer


def _randomize(model, seed: int) -> None:
    """Seeded random values for every weight, BN statistics included, so that the converter
    cannot fold any layer away as an identity (zero bias, unit scale)."""
    rng = np.random.default_rng(seed)
    for layer in _leaf_layers(model):
        new = []
        for w in layer.weights:
            name, shape = w.name.split("/")[-1].split(":")[0], tuple(w.shape)
            if name in ("gamma", "moving_variance", "alpha") and "p_re_lu" not in layer.name:
                v = rng.uniform(0.5, 1.5, shape)
            elif "p_re_lu" in layer.name:
                v = rng.uniform(0.1, 0.3, shape)
            elif name in ("beta", "moving_mean", "bias"):
                v = rng.normal(0.0, 0.1, shape)
            else:  # conv, depthwise, dense kernels
                v = rng.normal(0.0, 0.1, shape)
            new.append(v.astype(np.float32))
        if new:
            layer.set_weights(new)


def keras_summary(model) -> dict:
    """Parameter count (trainable: what PyTorch's parameters() counts) and the binary convs."""
    tf, lq = _imports()
    trainable = int(sum(np.prod(w.shape) for w in model.trainable_weights))
    total = int(model.count_params())
    bconvs, bmacs = 0, 0
    for layer in _leaf_layers(model):
        # A QuantConv2D without an input quantizer is a float conv (Larq Zoo writes some stems
        # that way): only those with binary inputs become LCE's binary conv.
        if isinstance(layer, lq.layers.QuantConv2D) and layer.input_quantizer is not None:
            bconvs += 1
            kh, kw, cin, cout = layer.kernel.shape
            _, h, w, _ = layer.output.shape
            bmacs += int(h * w * kh * kw * cin * cout)
    return {
        "params_trainable": trainable,
        "params_total": total,
        "binary_convs": bconvs,
        "binary_macs": bmacs,
    }


def flatbuffer_ops(buf: bytes) -> dict:
    """The operators of a .tflite, read from the flatbuffer with the schema LCE ships: a count per
    op name, and for each LceBconv2d its filter shape, output shape and binary MACs."""
    from flatbuffers import flexbuffers
    from larq_compute_engine.mlir.python import tflite_schema as schema

    builtin = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
    model = schema.Model.GetRootAs(buf, 0)
    names = []
    for i in range(model.OperatorCodesLength()):
        oc = model.OperatorCodes(i)
        code = max(oc.BuiltinCode(), oc.DeprecatedBuiltinCode())
        if code == schema.BuiltinOperator.CUSTOM:
            names.append(oc.CustomCode().decode())
        else:
            names.append(builtin.get(code, str(code)))
    counts = collections.Counter()
    bconvs = []
    for s in range(model.SubgraphsLength()):
        sg = model.Subgraphs(s)
        for j in range(sg.OperatorsLength()):
            op = sg.Operators(j)
            name = names[op.OpcodeIndex()]
            counts[name] += 1
            if name == "LceBconv2d":
                filt = tuple(sg.Tensors(op.Inputs(1)).ShapeAsNumpy().tolist())
                out = tuple(sg.Tensors(op.Outputs(0)).ShapeAsNumpy().tolist())
                opts = flexbuffers.Loads(bytes(op.CustomOptionsAsNumpy()))
                cin = int(opts.get("channels_in", 0))
                cout, kh, kw = filt[0], filt[1], filt[2]
                bconvs.append(
                    {
                        "filter": filt,
                        "output": out,
                        "channels_in": cin,
                        "padding": opts.get("padding"),
                        "pad_values": opts.get("pad_values"),
                        "bmacs": out[1] * out[2] * kh * kw * cin * cout,
                    }
                )
    return {
        "op_counts": dict(sorted(counts.items())),
        "bconv": bconvs,
        "bconv_count": counts.get("LceBconv2d", 0),
        "bconv_macs": int(sum(b["bmacs"] for b in bconvs)),
    }


def convert(plan: dict, out_path: str, dw: str = "concat", seed: int = 0) -> dict:
    """Builds, converts with larq_compute_engine.convert_keras_model, writes the .tflite, and
    returns a summary; raises if a binary conv did not become an LceBconv2d op."""
    tf, lq = _imports()
    import larq_compute_engine as lce

    model = build_named(plan, seed) if "kind" in plan else build_keras(plan, dw=dw, seed=seed)
    summary = keras_summary(model)
    buf = lce.convert_keras_model(model)
    with open(out_path, "wb") as f:
        f.write(buf)
    ops = flatbuffer_ops(buf)
    if ops["bconv_count"] != summary["binary_convs"]:
        raise RuntimeError(
            f"{summary['binary_convs']} QuantConv2D layers but "
            f"{ops['bconv_count']} LceBconv2d ops: {ops['op_counts']}"
        )
    return {
        "keras": summary,
        "tflite": ops,
        "tflite_bytes": len(buf),
        "dw": dw,
        "versions": {
            "tensorflow": tf.__version__,
            "larq": _version("larq"),
            "larq_compute_engine": lce.__version__,
            "tf_keras": _version("tf_keras"),
        },
    }


def _version(dist: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(dist.replace("_", "-"))
    except PackageNotFoundError:
        return "?"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--plan", required=True, help="JSON plan file (see the module docstring)")
    p.add_argument("--out", required=True, help="where to write the .tflite")
    p.add_argument("--dw", choices=("concat", "multiplier"), default="concat")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    with open(args.plan) as f:
        plan = json.load(f)
    print(json.dumps(convert(plan, args.out, dw=args.dw, seed=args.seed)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
