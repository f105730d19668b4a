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


def build_keras(plan: dict, dw: str = "concat", seed: int = 0):
    """The Keras model of a plan. `dw="concat"`: k DepthwiseConv2D + Concatenate, as the zoo;
    `dw="multiplier"`: one DepthwiseConv2D(depth_multiplier=k), the idiomatic Keras form (the same
    network up to a channel permutation; the shortcut is repeated per channel to match)."""
    tf, lq = _imports()
    layers = tf.keras.layers
    eps = 1e-5

    class ChannelBias(layers.Layer):
        """x + b, one learnable b per channel (the zoo's LearnableBias)."""

        def build(self, shape):
            self.b = self.add_weight(name="bias", shape=(shape[-1],), initializer="zeros")

        def call(self, x):
            return x + self.b

    class ChannelScale(layers.Layer):
        """x * a, one learnable a per output channel (BinaryConv2d's alpha)."""

        def build(self, shape):
            self.a = self.add_weight(name="alpha", shape=(shape[-1],), initializer="ones")

        def call(self, x):
            return x * self.a

    def bn(x):
        return layers.BatchNormalization(epsilon=eps)(x)

    def bprelu(x):
        return bn(layers.PReLU(shared_axes=[1, 2])(x))

    def ds_half(x, c, stride, k):
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
    for sh, sw, k, kernel in plan["stages"]:
        x = ds_half(x, c, (sh, sw), k)
        c *= k
        x = b_half(x, c, kernel)
    x = layers.GlobalAveragePooling2D()(x)
    out = layers.Dense(plan["num_classes"])(x)
    model = tf.keras.Model(inp, out, name=plan["name"])
    _randomize(model, seed)
    return model


def _randomize(model, seed: int) -> None:
    """Seeded random values for every weight, BN statistics included, so that the converter
    cannot fold any layer away as an identity (zero bias, unit scale)."""
    rng = np.random.default_rng(seed)
    for layer in model.layers:
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
    for layer in model.layers:
        if isinstance(layer, lq.layers.QuantConv2D):
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

    model = build_keras(plan, dw=dw, seed=seed)
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
