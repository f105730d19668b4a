"""scripts/check_wheel.py, the check that CI runs on every built wheel (scripts/test-x86-wheel.sh,
scripts/build-arm-wheels.sh): it accepts a wheel laid out as scikit-build-core writes ours and
rejects each kind of damage a packaging mistake makes. The wheels themselves are built by those
scripts, not here (a build takes minutes)."""

from __future__ import annotations

import base64
import hashlib
import importlib.util
import json
import os
import sys
import zipfile

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_spec = importlib.util.spec_from_file_location(
    "check_wheel", os.path.join(REPO, "scripts", "check_wheel.py")
)
assert _spec and _spec.loader
check_wheel = importlib.util.module_from_spec(_spec)
sys.modules["check_wheel"] = check_wheel
_spec.loader.exec_module(check_wheel)

VERSION = check_wheel.project_version()
SUFFIX = ".cpython-311-aarch64-linux-gnu.so"
PLATFORM = "linux_aarch64"


def fake_elf(machine: int) -> bytes:
    """An ELF header, 64-bit little-endian, with e_machine set: all check_wheel reads."""
    return b"\x7fELF\x02\x01\x01" + bytes(11) + machine.to_bytes(2, "little") + bytes(44)


def wheel_files(machine: int = 183) -> dict:
    files = {}
    for rel in check_wheel.expected_package_files():
        with open(os.path.join(REPO, "python", rel), "rb") as f:
            files[rel] = f.read()
    files[f"qbinfer/_core{SUFFIX}"] = fake_elf(machine)
    files[f"qbinfer-{VERSION}.data/scripts/qbinfer-bench"] = fake_elf(machine)
    di = f"qbinfer-{VERSION}.dist-info"
    files[f"{di}/WHEEL"] = (
        f"Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: false\nTag: cp311-cp311-{PLATFORM}\n"
    ).encode()
    files[f"{di}/METADATA"] = (
        f"Metadata-Version: 2.1\nName: qbinfer\nVersion: {VERSION}\nRequires-Dist: numpy>=1.23\n"
    ).encode()
    files[f"{di}/entry_points.txt"] = b"[console_scripts]\nqbinfer = qbinfer.__main__:main\n"
    return files


def write_wheel(folder, files: dict, record_extra=None, name=None) -> str:
    di = f"qbinfer-{VERSION}.dist-info"
    rows = []
    for member, data in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        rows.append(f"{member},sha256={digest},{len(data)}")
    rows += record_extra or []
    rows.append(f"{di}/RECORD,,")
    path = os.path.join(folder, name or f"qbinfer-{VERSION}-cp311-cp311-{PLATFORM}.whl")
    with zipfile.ZipFile(path, "w") as z:
        for member, data in files.items():
            z.writestr(member, data)
        z.writestr(f"{di}/RECORD", "\n".join(rows) + "\n")
    return path


def errors_of(path: str) -> list:
    return check_wheel.check_wheel(path, PLATFORM, SUFFIX)


def test_a_correct_wheel_passes(tmp_path):
    assert errors_of(write_wheel(str(tmp_path), wheel_files())) == []


def test_the_shipped_models_are_expected():
    expected = check_wheel.expected_package_files()
    models = os.listdir(os.path.join(REPO, "python", "qbinfer", "models"))
    assert {f"qbinfer/models/{m}" for m in models} <= set(expected)
    assert "qbinfer/models/digits_qbnet.qbw" in expected
    assert "qbinfer/_testing.pyi" not in expected


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda f: f.pop("qbinfer/models/digits_qbnet.qbw"), "missing qbinfer/models/digits_qbnet"),
        (lambda f: f.update({"qbinfer/_testing.pyi": b""}), "test-only"),
        (lambda f: f.update({"qbinfer/_testing.cpython-311-x.so": b""}), "test-only"),
        (lambda f: f.update({"tests/test_x.py": b""}), "test-only"),
        (lambda f: f.update({f"qbinfer/_core{SUFFIX}": fake_elf(62)}), "ELF machine 62"),
        (lambda f: f.pop(f"qbinfer/_core{SUFFIX}"), "extension []"),
        (
            lambda f: f.update({f"qbinfer-{VERSION}.dist-info/entry_points.txt": b""}),
            "no console script",
        ),
        (
            lambda f: f.update(
                {f"qbinfer-{VERSION}.dist-info/WHEEL": b"Wheel-Version: 1.0\nTag: py3-none-any\n"}
            ),
            "WHEEL Tag",
        ),
    ],
)
def test_damage_is_reported(tmp_path, damage, message):
    files = wheel_files()
    damage(files)
    errors = errors_of(write_wheel(str(tmp_path), files))
    assert any(message in e for e in errors), errors


def test_record_must_match_the_files(tmp_path):
    files = wheel_files()
    path = write_wheel(str(tmp_path), files, record_extra=["qbinfer/gone.py,sha256=x,1"])
    assert any("qbinfer/gone.py, which the wheel does not have" in e for e in errors_of(path))
    # A file changed after RECORD was written: its hash no longer matches.
    tampered = os.path.join(str(tmp_path), "t.whl")
    with zipfile.ZipFile(path) as src, zipfile.ZipFile(tampered, "w") as dst:
        for item in src.infolist():
            data = src.read(item)
            if item.filename == "qbinfer/__init__.py":
                data += b"# changed\n"
            dst.writestr(item, data)
    os.replace(tampered, path)
    assert any("RECORD row of qbinfer/__init__.py" in e for e in errors_of(path))


def test_platform_and_version_in_the_name(tmp_path):
    files = wheel_files()
    armv7 = write_wheel(
        str(tmp_path), files, name=f"qbinfer-{VERSION}-cp311-cp311-linux_armv7l.whl"
    )
    assert any("platform tag linux_armv7l" in e for e in errors_of(armv7))
    old = write_wheel(str(tmp_path), files, name="qbinfer-0.0.0-cp311-cp311-linux_aarch64.whl")
    assert errors_of(old) and "not qbinfer-" in errors_of(old)[0]


def test_demo_json(tmp_path):
    site = tmp_path / "site-packages"
    with open(os.path.join(REPO, "python", "qbinfer", "models", "digits_qbnet.json")) as f:
        recorded = json.load(f)["accuracy_engine"]
    good = {
        "qbw": str(site / "qbinfer" / "models" / "digits_qbnet.qbw"),
        "images": 450,
        "accuracy_engine": recorded,
        "batch_matches_single": True,
    }
    cases = [
        ({}, None),
        ({"accuracy_engine": recorded - 0.2222}, "accuracy"),
        (
            {"qbw": os.path.join(REPO, "python/qbinfer/models/digits_qbnet.qbw")},
            "not the installed",
        ),
        ({"batch_matches_single": False}, "one batch"),
    ]
    for change, message in cases:
        out = tmp_path / "demo.json"
        out.write_text("progress lines are on stderr\n" + json.dumps({**good, **change}) + "\n")
        errors = check_wheel.check_demo(str(out), str(site))
        if message is None:
            assert errors == []
        else:
            assert any(message in e for e in errors), (change, errors)


def test_release_override_drops_testing():
    """The release wheel builds without qbinfer._testing; a plain install keeps it (the test
    suite imports it), named explicitly so one build tree serves both."""
    tomllib = pytest.importorskip("tomllib")
    with open(os.path.join(REPO, "pyproject.toml"), "rb") as f:
        skb = tomllib.load(f)["tool"]["scikit-build"]
    assert skb["cmake"]["define"]["QBINFER_BUILD_TESTING"] == "ON"
    (release,) = [
        o for o in skb["overrides"] if o["if"].get("env", {}).get("QBINFER_RELEASE_WHEEL")
    ]
    assert release["cmake"]["define"]["QBINFER_BUILD_TESTING"] == "OFF"
    assert release["inherit"]["cmake"]["define"] == "append"
    assert "qbinfer/_testing.pyi" in release["wheel"]["exclude"]
