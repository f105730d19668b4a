"""weights_tools.checkpoint: the one state-dict loader used by the converter, the teacher loader,
the exporter and the training tool."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from weights_tools import checkpoint as C  # noqa: E402


@pytest.fixture
def state():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4))
    return model, model.state_dict()


def _save(tmp_path, obj, name="ck.pth"):
    path = tmp_path / name
    torch.save(obj, path)
    return str(path)


def _assert_same(a, b):
    assert list(a) == list(b)
    for k in a:
        assert torch.equal(a[k], b[k]), k


@pytest.mark.parametrize(
    "wrap",
    [
        lambda s: s,  # torch.save(model.state_dict())
        lambda s: {"model": s, "meta": {"arch": "x"}, "epoch": 3},  # weights_tools.train
        lambda s: {"state_dict": s, "epoch": 3},  # most other training scripts
    ],
    ids=["plain", "model-key", "state_dict-key"],
)
@pytest.mark.parametrize("ddp", [False, True], ids=["single", "ddp"])
def test_layouts_give_the_same_weights(tmp_path, state, wrap, ddp):
    model, sd = state
    saved = {f"module.{k}": v for k, v in sd.items()} if ddp else sd
    loaded = C.read_state_dict(_save(tmp_path, wrap(saved)))
    _assert_same(loaded, sd)
    fresh = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4))
    fresh.load_state_dict(loaded)  # strict: the names fit the model again
    _assert_same(fresh.state_dict(), sd)


def test_module_prefix_is_kept_unless_every_key_has_it(tmp_path, state):
    _, sd = state
    mixed = dict(sd)
    mixed["module.extra"] = torch.zeros(1)
    loaded = C.read_state_dict(_save(tmp_path, mixed))
    assert "module.extra" in loaded and "0.weight" in loaded


def test_a_weights_dict_is_not_mistaken_for_a_wrapper(tmp_path):
    # A model whose submodule is called "model" saves keys such as "model.weight": a plain
    # state_dict, not a wrapper holding one under "model".
    sd = {"model.weight": torch.ones(2), "head.bias": torch.zeros(1)}
    _assert_same(C.read_state_dict(_save(tmp_path, sd)), sd)


@pytest.mark.parametrize(
    "obj",
    [[1, 2, 3], {"epoch": 3}, {"model": {"w": 1}}, {"state_dict": [torch.ones(1)]}],
    ids=["list", "no-weights", "non-tensor-values", "not-a-dict"],
)
def test_non_state_dicts_are_refused_with_the_path(tmp_path, obj):
    path = _save(tmp_path, obj)
    with pytest.raises(ValueError, match="not a state_dict") as exc:
        C.read_state_dict(path)
    assert path in str(exc.value)


def test_pickled_code_is_not_run(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("ran",))

    path = _save(tmp_path, {"model": Evil()})
    with pytest.raises(Exception, match="(?i)weights.only|unsupported|global"):
        C.read_state_dict(path)


def test_checkpoint_meta(tmp_path, state):
    _, sd = state
    assert C.checkpoint_meta(_save(tmp_path, {"model": sd, "meta": {"arch": "qb_net_small"}})) == {
        "arch": "qb_net_small"
    }
    assert C.checkpoint_meta(_save(tmp_path, sd, "plain.pth")) == {}


def test_converter_and_teacher_use_this_loader():
    # One loader: the modules that read checkpoints take it from here, not from a copy.
    from weights_tools import convert, teacher

    assert teacher.read_state_dict is C.read_state_dict
    assert teacher.checkpoint_meta is C.checkpoint_meta
    assert not hasattr(convert, "_load_state_dict")
