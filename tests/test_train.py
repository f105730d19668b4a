"""weights_tools.train: the recipe's pieces, short training runs on generated images, the torchrun
(gloo) two-process run, and the shipped digits model against PyTorch."""

from __future__ import annotations

import dataclasses
import io
import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")
PIL = pytest.importorskip("PIL.Image")

from conftest import ROOT, run_qbinfer_main  # noqa: E402

from weights_tools import data as D  # noqa: E402
from weights_tools import train as T  # noqa: E402
from weights_tools.layers import BinaryConv2d  # noqa: E402
from weights_tools.teacher import TEACHER_ARCHS, build_teacher, load_teacher  # noqa: E402

# A QB-Net-Small cut down to its first four blocks at 16x16: seconds per run on two cores.
TINY = [
    "--arch",
    "qb_net_small",
    "--blocks",
    "N,D,N,Q",
    "--input-size",
    "16",
    "--workers",
    "0",
    "--threads",
    "1",
    "--no-progress",
]


def _write_folder(root, per_class, seed, size=20):
    """Four classes told apart by colour, with noise: learnable in a few steps."""
    rng = np.random.default_rng(seed)
    colours = [(200, 40, 40), (40, 200, 40), (40, 40, 200), (200, 200, 40)]
    for c, colour in enumerate(colours):
        os.makedirs(root / f"class_{c}", exist_ok=True)
        for i in range(per_class):
            img = np.asarray(colour, np.float64) + rng.normal(0, 40, (size, size + 4, 3))
            pixels = np.clip(img, 0, 255).astype(np.uint8)
            PIL.fromarray(pixels).save(root / f"class_{c}" / f"{i}.png")


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("imagefolder")
    _write_folder(root / "train", 8, seed=1)
    _write_folder(root / "val", 4, seed=2)
    return str(root)


def _run(folder, out, *extra):
    return T.train([*TINY, "--data", folder, "--out", str(out), *extra])


def _read_log(path):
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f]


def _load(path):
    return torch.load(path, map_location="cpu", weights_only=True)


# ---------------------------------------------------------------------------------------------
# Pieces


def test_topk_correct():
    logits = torch.tensor(
        [
            [0.1, 0.9, 0.0, 0.2, 0.3, 0.4, 0.5],
            [0.9, 0.1, 0.0, 0.2, 0.3, 0.4, 0.5],
            [0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6],
        ]
    )
    targets = torch.tensor([1, 2, 2])  # top-1 hit; last place; fifth place
    assert T.topk_correct(logits, targets, (1, 5)) == [1, 2]
    # k larger than the class count is capped: top-5 of three classes is top-3
    assert T.topk_correct(torch.tensor([[3.0, 2.0, 1.0]]), torch.tensor([2]), (1, 5)) == [0, 1]


def test_lr_schedules():
    assert T.lr_factor(0, 100, "poly") == 1.0
    assert T.lr_factor(50, 100, "poly") == pytest.approx(0.5)
    assert T.lr_factor(99, 100, "poly") == pytest.approx(0.01)
    warm = [T.lr_factor(s, 100, "cosine", 10) for s in range(100)]
    assert warm[0] == pytest.approx(0.1) and warm[9] == pytest.approx(1.0)
    assert warm[10] == pytest.approx(1.0) and warm[55] == pytest.approx(0.5, abs=0.02)
    assert all(a >= b for a, b in zip(warm[10:], warm[11:])) and warm[-1] < 0.001


def test_kd_loss_is_kl_between_softmaxes():
    torch.manual_seed(0)
    s, t = torch.randn(6, 10), torch.randn(6, 10)
    p_t = torch.softmax(t, 1)
    expected = (p_t * (torch.log_softmax(t, 1) - torch.log_softmax(s, 1))).sum(1).mean()
    assert float(T.kd_loss(s, t)) == pytest.approx(float(expected), rel=1e-5)
    assert float(T.kd_loss(t, t)) == pytest.approx(0.0, abs=1e-6)


def test_progress_bar_lines(capsys):
    stream = io.StringIO()
    bar = T.Progress(20, "epoch 1/1", stream=stream, every=5)
    for _ in range(20):
        bar.update(loss=0.5)
    lines = stream.getvalue().splitlines()
    assert len(lines) == 4 and lines[-1].startswith("epoch 1/1 [") and "20/20" in lines[-1]


class _Terminal(io.StringIO):
    def isatty(self):
        return True


def test_progress_bar_on_a_terminal_is_tqdm_and_quiet_writes_nothing():
    from tqdm import tqdm

    stream = _Terminal()
    bar = T.Progress(20, "epoch 1/1", stream=stream, initial=5)
    assert isinstance(bar.bar, tqdm)
    for _ in range(15):
        bar.update(loss=0.5)
    bar.close()
    text = stream.getvalue()
    assert "\r" in text and "20/20" in text and "loss=0.5" in text
    for quiet_stream in (_Terminal(), io.StringIO()):
        bar = T.Progress(20, "epoch 1/1", enabled=False, stream=quiet_stream)
        for _ in range(20):
            bar.update(loss=0.5)
        bar.close()
        assert quiet_stream.getvalue() == ""


def test_command_line_builds_the_config_with_its_defaults():
    required = ["--stage", "1", "--arch", "qb_net_small", "--out", "runs/x"]
    cfg = T.parse_config(required)
    assert cfg == T.TrainConfig(stage="1", arch="qb_net_small", out="runs/x")
    assert cfg.weight_decay_value == 1e-5 and not cfg.quiet
    for flag in ("--quiet", "--no-progress"):
        assert T.parse_config([*required, flag]).quiet
    cfg = T.parse_config([*required, "--epochs", "3", "--weight-decay", "0.5", "--se", "se1"])
    assert (cfg.epochs, cfg.weight_decay_value, cfg.se) == (3, 0.5, "se1")
    # every option of the command line is a field of the config, and the other way round
    dests = {a.dest for a in T.build_parser()._actions if a.dest != "help"}
    assert dests == {f.name for f in dataclasses.fields(T.TrainConfig)}


def test_imagefolder_and_eval_transform_match_the_engine_preprocessing(folder):
    ds = D.ImageFolder(os.path.join(folder, "train"))
    assert ds.classes == ["class_0", "class_1", "class_2", "class_3"] and len(ds) == 32
    img, target = ds[9]
    assert img.size == (24, 20) and target == 1
    # The eval transform (PIL resize, crop, normalize) agrees with qbinfer's numpy preprocessing
    # to PIL's fixed-point rounding (one uint8 level).
    qpre = pytest.importorskip("qbinfer.preprocess")
    mean, std = D.IMAGENET_MEAN, D.IMAGENET_STD
    t = D.build_transform(False, (16, 16), 18, mean, std)
    ours = t(img, np.random.default_rng(0)).numpy().transpose(1, 2, 0)
    spec = {"resize_short": 18, "crop": (16, 16), "mean": mean, "std": std, "pixel_scale": 1 / 255}
    engine = qpre.preprocess(np.asarray(img), spec)[0]
    assert np.abs(ours - engine).max() <= 1.01 / 255 / min(std)  # one uint8 level


def test_augmentation_is_a_function_of_seed_epoch_index(folder):
    base = D.ImageFolder(os.path.join(folder, "train"))
    t = D.build_transform(True, (16, 16), 18, D.IMAGENET_MEAN, D.IMAGENET_STD)
    a, b = D.TransformedDataset(base, t, seed=3), D.TransformedDataset(base, t, seed=3)
    assert torch.equal(a[5][0], b[5][0])
    b.set_epoch(1)
    assert not torch.equal(a[5][0], b[5][0])
    for step in ("RandomResizedCrop", "RandomHorizontalFlip", "Lighting"):
        assert step in repr(t)
    no_flip = D.build_transform(True, (16, 16), 18, D.IMAGENET_MEAN, D.IMAGENET_STD, ("crop",))
    assert "Flip" not in repr(no_flip) and "Lighting" not in repr(no_flip)


def test_digits_split():
    pytest.importorskip("sklearn")
    x, y = D.digits_arrays("train")
    hx, hy = D.digits_arrays("holdout")
    assert x.shape == (1347, 32, 32, 3) and hx.shape == (450, 32, 32, 3) and x.dtype == np.uint8
    assert np.bincount(hy).tolist() == [45] * 10
    hx2, _ = D.digits_arrays("holdout")
    assert np.array_equal(hx, hx2)  # deterministic
    # disjoint: no held-out image equals a training image with the same label (digits has no
    # exact duplicates across different samples of one class)
    train_keys = {(bytes(im[..., 0]), int(c)) for im, c in zip(x, y)}
    assert not any((bytes(im[..., 0]), int(c)) in train_keys for im, c in zip(hx, hy))


def test_torchvision_style_teachers():
    counts = {"resnet18": 11_689_512, "resnet34": 21_797_672, "resnet50": 25_557_032}
    for name, n in counts.items():
        model = build_teacher(name, 1000)
        assert sum(p.numel() for p in model.parameters()) == n, name
    keys = build_teacher("resnet34", 1000).state_dict().keys()
    for k in (
        "conv1.weight",
        "bn1.running_mean",
        "layer1.0.conv1.weight",
        "layer2.0.downsample.0.weight",
        "layer2.0.downsample.1.running_var",
        "layer4.2.bn2.weight",
        "fc.bias",
    ):
        assert k in keys
    with pytest.raises(ValueError, match="unknown teacher"):
        build_teacher("no_such_net", 10)
    assert {"cifar_resnet8", "cifar_resnet20"} <= set(TEACHER_ARCHS)


# ---------------------------------------------------------------------------------------------
# Short runs


def test_loss_falls(folder, tmp_path):
    r = _run(
        folder,
        tmp_path,
        "--stage",
        "1",
        "--epochs",
        "8",
        "--batch-size",
        "32",
        "--augment",
        "none",
        "--schedule",
        "constant",
    )
    losses = [h["train_loss"] for h in r["history"]]
    assert len(losses) == 8 and r["steps_per_epoch"] == 1
    assert np.mean(losses[-2:]) < 0.7 * np.mean(losses[:2]), losses
    log = _read_log(tmp_path / "log.jsonl")
    assert [e["event"] for e in log] == ["start"] + ["epoch"] * 8 + ["end"]
    assert all("val_top1" in e and "val_top5" in e for e in log if e["event"] == "epoch")
    assert (tmp_path / "train.log").read_text().count("epoch ") >= 8


def test_stage1_hands_over_to_stage2(folder, tmp_path):
    r1 = _run(folder, tmp_path / "s1", "--stage", "1", "--epochs", "1", "--batch-size", "16")
    assert r1["weight_decay"] == 1e-5 and r1["meta"]["stage"] == 1
    s1 = _load(tmp_path / "s1" / "model.pth")
    # lr 0: stage 2 keeps stage 1's parameters exactly, so what is saved is what was loaded
    r2 = _run(
        folder,
        tmp_path / "s2",
        "--stage",
        "2",
        "--init",
        str(tmp_path / "s1" / "model.pth"),
        "--epochs",
        "1",
        "--batch-size",
        "16",
        "--lr",
        "0",
    )
    assert r2["weight_decay"] == 0.0 and r2["meta"]["stage"] == 2
    s2 = _load(tmp_path / "s2" / "model.pth")
    stage2 = T.model_from_meta(s2["meta"])
    stage2.load_state_dict(s2["model"])
    binaries = [m for m in stage2.modules() if isinstance(m, BinaryConv2d)]
    assert binaries and all(m.binary_weights for m in binaries)
    assert not any(
        m.binary_weights
        for m in T.model_from_meta(s1["meta"]).modules()
        if isinstance(m, BinaryConv2d)
    )
    params = dict(stage2.named_parameters())
    for name in params:
        assert torch.equal(s1["model"][name], s2["model"][name]), name
    # the same weights give other outputs once the weights are binarized
    stage1 = T.model_from_meta(s1["meta"])
    stage1.load_state_dict(s2["model"])
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        assert not torch.allclose(stage1.eval()(x), stage2.eval()(x))


def test_resume_reproduces_the_state(folder, tmp_path):
    common = ["--stage", "1", "--epochs", "2", "--batch-size", "8", "--seed", "5"]  # 4 steps/epoch
    _run(folder, tmp_path / "straight", *common, "--max-steps", "6")
    _run(folder, tmp_path / "split", *common, "--max-steps", "3")  # stops mid-epoch
    first = _load(tmp_path / "split" / "checkpoint.pth")
    assert (first["epoch"], first["step_in_epoch"], first["global_step"]) == (0, 3, 3)
    _run(folder, tmp_path / "split", *common, "--max-steps", "6", "--resume", "auto")
    a = _load(tmp_path / "straight" / "checkpoint.pth")
    b = _load(tmp_path / "split" / "checkpoint.pth")
    assert (b["epoch"], b["step_in_epoch"], b["global_step"]) == (1, 2, 6)
    assert a["model"].keys() == b["model"].keys()
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
    for sa, sb in zip(a["optimizer"]["state"].values(), b["optimizer"]["state"].values()):
        assert all(torch.equal(sa[k], sb[k]) for k in ("exp_avg", "exp_avg_sq", "step"))
    assert a["scheduler"]["last_epoch"] == b["scheduler"]["last_epoch"] == 6


def test_teacher_then_distillation(folder, tmp_path):
    rt = T.train(
        [
            "--stage",
            "teacher",
            "--arch",
            "cifar_resnet8",
            "--data",
            folder,
            "--input-size",
            "16",
            "--workers",
            "0",
            "--threads",
            "1",
            "--no-progress",
            "--epochs",
            "1",
            "--batch-size",
            "16",
            "--out",
            str(tmp_path / "teacher"),
        ]
    )
    assert rt["meta"]["kind"] == "teacher" and rt["weight_decay"] == 1e-4
    teacher = load_teacher(str(tmp_path / "teacher" / "model.pth"), None, 4)  # arch from the file
    assert not teacher.training and not any(p.requires_grad for p in teacher.parameters())
    r = _run(
        folder,
        tmp_path / "s1",
        "--stage",
        "1",
        "--epochs",
        "1",
        "--batch-size",
        "16",
        "--teacher",
        str(tmp_path / "teacher" / "model.pth"),
        "--eval-teacher",
    )
    log = _read_log(tmp_path / "s1" / "log.jsonl")
    assert any(e["event"] == "teacher_eval" for e in log)
    assert np.isfinite(r["history"][0]["train_loss"])
    with pytest.raises(SystemExit, match="does not fit"):  # a teacher is no student's init
        _run(
            folder,
            tmp_path / "bad",
            "--stage",
            "1",
            "--epochs",
            "1",
            "--init",
            str(tmp_path / "teacher" / "model.pth"),
        )


def test_cosine_from_scratch(folder, tmp_path):
    r = _run(
        folder,
        tmp_path,
        "--stage",
        "2",
        "--schedule",
        "cosine",
        "--warmup",
        "1",
        "--epochs",
        "2",
        "--batch-size",
        "16",
    )
    assert r["final"]["complete"] and len(r["history"]) == 2
    assert r["history"][0]["lr"] == pytest.approx(1e-3)  # end of the warm-up epoch
    assert r["history"][1]["lr"] == pytest.approx(0.0, abs=1e-12)


def test_poly_per_epoch(folder, tmp_path):
    r = _run(
        folder,
        tmp_path,
        "--stage",
        "1",
        "--epochs",
        "2",
        "--batch-size",
        "16",
        "--lr-update",
        "epoch",
    )
    # lr(1 - e/E) held for the whole epoch: after epoch 1 of 2 the next rate is half the base
    assert [h["lr"] for h in r["history"]] == pytest.approx([5e-4, 0.0])


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_torchrun_two_cpu_processes_end_with_the_same_weights(folder, tmp_path):
    out = tmp_path / "ddp"
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nnodes=1",
        "--nproc_per_node=2",
        "--master_addr=127.0.0.1",
        f"--master_port={_free_port()}",
        "-m",
        "weights_tools.train",
        *TINY,
        "--data",
        folder,
        "--out",
        str(out),
        "--stage",
        "1",
        "--epochs",
        "2",
        "--batch-size",
        "4",
        "--max-steps",
        "3",
        "--save-rank-weights",
        "--device",
        "cpu",
    ]
    env = {**os.environ, "PYTHONPATH": ROOT + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=240, cwd=ROOT, env=env)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "2 process(es)" in proc.stderr and "backend gloo" in proc.stderr
    r0, r1 = _load(out / "final_rank0.pth"), _load(out / "final_rank1.pth")
    assert r0["checksum"] == r1["checksum"]
    for k in r0["model"]:
        assert torch.equal(r0["model"][k], r1["model"][k]), k
    # and they trained: the weights moved away from the seed's initial ones
    init = T.model_from_meta(_load(out / "model.pth")["meta"]).state_dict()
    assert any(not torch.equal(init[k], r0["model"][k]) for k in init if k.endswith("weight"))
    ck = _load(out / "checkpoint.pth")
    assert ck["global_step"] == 3


# ---------------------------------------------------------------------------------------------
# The shipped model


def _has(module):
    import importlib.util

    return importlib.util.find_spec(module) is not None


def _shipped():
    demo = pytest.importorskip("qbinfer.demo")
    try:
        return demo.shipped_record()
    except SystemExit as exc:
        pytest.fail(str(exc))


def test_shipped_model_engine_matches_pytorch():
    import qbinfer
    from weights_tools.export import eval_inputs, load_compact_model, torch_logits

    folder, record = _shipped()
    with np.load(os.path.join(folder, record["holdout"]), allow_pickle=False) as z:
        images, labels = z["images"], z["labels"]
    assert images.shape == (450, 32, 32, 3) and images.dtype == np.uint8
    if _has("sklearn"):  # the held-out split, never trained on
        held_images, held_labels = D.digits_arrays("holdout")
        assert np.array_equal(images, held_images) and np.array_equal(labels, held_labels)
    model = qbinfer.load(os.path.join(folder, record["model"]))
    assert model.class_names == [str(d) for d in range(10)] and model.input_shape[:2] == (32, 32)
    torch_model = load_compact_model(os.path.join(folder, record["weights"]))
    x = eval_inputs(images, torch_model.meta["data"])
    engine = model.run(x).argmax(1)
    ref = torch_logits(torch_model, x).argmax(1)
    acc_engine = 100 * np.mean(engine == labels)
    acc_torch = 100 * np.mean(ref == labels)
    assert acc_engine >= 90.0
    assert abs(acc_engine - acc_torch) <= 0.5, (acc_engine, acc_torch)
    assert acc_torch == pytest.approx(record["accuracy_torch"], abs=1e-6)
    # the engine's own preprocessing of the uint8 images gives the same inputs
    via_predict = [int(model.predict(im, top_k=1)[0][0]) for im in images[:20]]
    assert via_predict == engine[:20].tolist()


@pytest.mark.parametrize("block_torch", [False, True])
def test_shipped_demo_json(block_torch):
    out = run_qbinfer_main("demo", "--json", block_torch=block_torch)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.strip().splitlines()
    assert len(lines) == 1
    rec = json.loads(lines[0])
    assert rec["accuracy_engine"] >= 90.0 and rec["latency_ms"] > 0 and rec["images"] == 450
    assert rec["batch_matches_single"]
    assert abs(rec["accuracy_engine"] - rec["accuracy_torch"]) <= 0.5
    assert rec["accuracy_torch_source"] == ("recorded" if block_torch else "measured")
    if block_torch:
        assert "torch_latency_ms" not in rec and "top1_agreement" not in rec
    else:
        assert rec["top1_agreement"] >= 99.0
