"""The C API (include/qbinfer/qbinfer.h) as an application uses it: libqbinfer built and installed
with CMake into a prefix, then the example (examples/c/classify.c, shared library) and the C
failure tests (tests/c/capi_tests.c, static library) configured against the installed package
with find_package(qbinfer), as separate projects. The example's top-5 on images written as
PPM/PGM files must be Python's `Model.predict` on the same pixels: the same indices, names and
probabilities (the library runs the same engine preprocessing, so the same bits are expected).

The library is built in build/capi of the checkout (kept, so a rerun compiles only what
changed; about 2 CPU-minutes from scratch, a little over 1 minute on 2 idle cores), or taken
installed from QBINFER_CAPI_PREFIX when that names an install prefix. cmake, a C and a C++
compiler are needed, as for the package itself."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import List, Tuple

import numpy as np
import pytest
from conftest import ROOT

import qbinfer

MODELS = Path(qbinfer.__file__).parent / "models"
DIGITS = MODELS / "digits_qbnet.qbw"
CONFIG = Path("lib") / "cmake" / "qbinfer" / "qbinferConfig.cmake"


def _run(cmd: List[str], what: str, **kw: object) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, capture_output=True, text=True, **kw)  # type: ignore[call-overload]
    assert proc.returncode == 0, (
        f"{what} failed (exit {proc.returncode}): {' '.join(map(str, cmd))}\n"
        f"--- stdout\n{proc.stdout[-6000:]}\n--- stderr\n{proc.stderr[-6000:]}"
    )
    return proc


def _cmake() -> str:
    cmake = shutil.which("cmake")
    assert cmake is not None, "cmake (a build requirement of qbinfer) is needed to build libqbinfer"
    return cmake


def _jobs() -> str:
    return os.environ.get("CMAKE_BUILD_PARALLEL_LEVEL") or str(max(1, os.cpu_count() or 1))


@pytest.fixture(scope="module")
def prefix(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An install prefix holding the C API package (headers, libqbinfer.a/.so, CMake package,
    pkg-config file)."""
    given = os.environ.get("QBINFER_CAPI_PREFIX")
    if given:
        assert (Path(given) / CONFIG).is_file(), (
            f"QBINFER_CAPI_PREFIX={given} holds no {CONFIG}: install the C API there first "
            f"(cmake --install <build> --component capi --prefix {given}) or unset it"
        )
        return Path(given)
    cmake = _cmake()
    build = Path(ROOT) / "build" / "capi"
    _run(
        [cmake, "-S", ROOT, "-B", str(build), "-DCMAKE_BUILD_TYPE=Release"]
        + ["-DQBINFER_BUILD_PYTHON=OFF", "-DQBINFER_BUILD_C_API=ON"],
        "configuring libqbinfer",
    )
    _run(
        [cmake, "--build", str(build), "-j", _jobs(), "--target", "qbinfer_static"]
        + ["--target", "qbinfer_shared"],
        "building libqbinfer",
    )
    out = tmp_path_factory.mktemp("prefix")
    _run([cmake, "--install", str(build), "--component", "capi", "--prefix", str(out)], "install")
    return out


def _build_against(prefix: Path, source: str, build: Path, target: str) -> Path:
    """Configures the project in `source` (relative to the checkout) against the installed
    package only (CMAKE_PREFIX_PATH) and builds `target`."""
    cmake = _cmake()
    _run(
        [cmake, "-S", os.path.join(ROOT, source), "-B", str(build)]
        + ["-DCMAKE_BUILD_TYPE=Release", f"-DCMAKE_PREFIX_PATH={prefix}"],
        f"configuring {source} against {prefix}",
    )
    _run([cmake, "--build", str(build), "-j", _jobs(), "--target", target], f"building {source}")
    return build / target


@pytest.fixture(scope="module")
def classify(prefix: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _build_against(prefix, "examples/c", tmp_path_factory.mktemp("classify"), "classify")


def test_installed_package_layout(prefix: Path) -> None:
    lib = prefix / "lib"
    assert (prefix / "include" / "qbinfer" / "qbinfer.h").is_file()
    assert (prefix / "include" / "qbinfer" / "qbinfer.hpp").is_file()
    assert (lib / "libqbinfer.a").is_file()
    assert (lib / "libqbinfer.so").exists()
    assert (prefix / CONFIG).is_file()
    pc = (lib / "pkgconfig" / "qbinfer.pc").read_text()
    assert f"Version: {qbinfer.__version__}" in pc
    # The internal headers (csrc/include/qbinfer/isa.h, bit_contract.h) are not installed.
    assert sorted(p.name for p in (prefix / "include" / "qbinfer").iterdir()) == [
        "qbinfer.h",
        "qbinfer.hpp",
    ]


def test_shared_library_exports_only_the_c_api(prefix: Path) -> None:
    nm = shutil.which("nm")
    assert nm is not None, "nm (binutils) is needed to list the exported symbols"
    out = _run([nm, "-D", "--defined-only", str(prefix / "lib" / "libqbinfer.so")], "nm").stdout
    # Every defined dynamic symbol (functions T, weak W, data D/B...), but the version node (A).
    names = [f[-1] for f in (line.split() for line in out.splitlines()) if f[1:2] != ["A"]]
    assert "qbinfer_model_predict" in names, out
    assert all(n.startswith("qbinfer_") for n in names), [
        n for n in names if not n.startswith("qbinfer_")
    ]


def _write_pnm(path: Path, pixels: np.ndarray) -> None:
    """A binary PPM (H x W x 3) or PGM (H x W) with maxval 255."""
    magic = b"P6" if pixels.ndim == 3 else b"P5"
    h, w = pixels.shape[:2]
    # A comment in the header, as files from other tools have.
    path.write_bytes(magic + b"\n# qbinfer test\n%d %d\n255\n" % (w, h) + pixels.tobytes())


def _parse_top(stdout: str) -> List[Tuple[int, float, str]]:
    lines = stdout.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("top-"))
    rows = []
    for line in lines[start + 1 :]:
        m = re.fullmatch(r"(\d+) (\d+) (\S+) ?(.*)", line)
        assert m, f"unexpected line {line!r} in\n{stdout}"
        rows.append((int(m.group(2)), float(m.group(3)), m.group(4)))
    return rows


def _images() -> List[Tuple[str, np.ndarray]]:
    """Digits of the held-out set, as given and resized through every path of the recipe, and
    a noise picture (whose close probabilities leave no slack for a different order)."""
    with np.load(MODELS / "digits_holdout.npz", allow_pickle=False) as z:
        digits = z["images"]
    rng = np.random.default_rng(17)
    big = np.repeat(np.repeat(digits[1], 3, axis=0), 3, axis=1)[:, 7:88]  # 96 x 81: downscale
    gray = np.repeat(np.repeat(digits[2].mean(axis=2).astype(np.uint8), 2, axis=0), 2, axis=1)
    return [
        ("digit_32x32.ppm", np.ascontiguousarray(digits[0])),
        ("digit_96x81.ppm", np.ascontiguousarray(big)),
        ("digit_gray_64x45.pgm", np.ascontiguousarray(gray[:, 9:54])),
        ("noise_50x70.ppm", rng.integers(0, 256, (50, 70, 3), dtype=np.uint8)),
        # Extremes: one row (upscaled 32x), and a camera frame (31-tap filters, which numpy
        # sums pairwise: the library must add them in the same order to get the same weights).
        ("noise_1x200.ppm", rng.integers(0, 256, (1, 200, 3), dtype=np.uint8)),
        ("noise_480x640.ppm", rng.integers(0, 256, (480, 640, 3), dtype=np.uint8)),
    ]


@pytest.mark.parametrize("name,pixels", _images(), ids=[n for n, _ in _images()])
def test_example_top5_equals_python_predict(
    classify: Path, tmp_path: Path, name: str, pixels: np.ndarray
) -> None:
    image = tmp_path / name
    _write_pnm(image, pixels)
    proc = _run([str(classify), str(DIGITS), str(image), "--top", "5"], "classify")
    got = _parse_top(proc.stdout)

    model = qbinfer.load(DIGITS, threads=1)
    want = model.predict(pixels, top_k=5)
    assert isinstance(want, list)
    names = model.class_names
    assert len(got) == len(want) == 5, proc.stdout
    for (index, prob, cname), (want_name, want_prob) in zip(got, want):
        assert names[index] == want_name == cname, (proc.stdout, want)
        # The same engine code on the same pixels: the same float32 logits, the same float64
        # softmax; %.17g prints every bit of it.
        assert prob == pytest.approx(want_prob, rel=1e-12, abs=1e-15), (proc.stdout, want)
    assert f"qbinfer {qbinfer.__version__}," in proc.stdout


def _sanitised(name: str) -> str:
    """A class name as classify.c prints it: printable ASCII as is, other bytes as \\xNN."""
    return "".join(
        chr(b) if 0x20 <= b < 0x7F and b != 0x5C else f"\\x{b:02x}" for b in name.encode()
    )


def test_example_on_a_gray_model_equals_python(classify: Path, tmp_path: Path) -> None:
    """A 1-channel model: an RGB picture becomes luma (Pillow's integer rule) in the library as
    in Python, with a resize and crop; a class name with an escape sequence and non-ASCII bytes
    is printed sanitised."""
    torch = pytest.importorskip("torch", reason="converting a model needs the tools extra")
    from weights_tools.convert import to_qbw

    nn = torch.nn
    torch.manual_seed(3)
    net = nn.Sequential(
        nn.Conv2d(1, 6, 3, padding=1),
        nn.PReLU(6),
        nn.Conv2d(6, 8, 3, stride=2, padding=1),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(8, 8),
    ).eval()
    names = ["zero", "one", "two\x1b[31m", "drei", "vier", "fünf", "six", "sept"]
    path = tmp_path / "gray.qbw"
    to_qbw(
        net,
        path,
        input_size=(28, 28),
        in_channels=1,
        class_names=names,
        preprocessing={"resize_short": 30},
    )
    model = qbinfer.load(path, threads=1)
    y, x = np.mgrid[0:45, 0:37]
    rgb = np.stack([x * 6, y * 5, (x * y) % 256], axis=2).astype(np.uint8)  # 45 x 37 RGB
    image = tmp_path / "colour.ppm"
    _write_pnm(image, rgb)
    # Every class (top-8), so that both odd names are printed.
    out = _run([str(classify), str(path), str(image), "--top", "8"], "classify").stdout
    assert "two\\x1b[31m" in out and "f\\xc3\\xbcnf" in out and "\x1b" not in out, out
    got = _parse_top(out)
    want = model.predict(rgb, top_k=8)
    assert isinstance(want, list)
    assert [(names[i], c) for i, _, c in got] == [(n, _sanitised(n)) for n, _ in want]
    for (_, prob, _), (_, want_prob) in zip(got, want):
        assert prob == pytest.approx(want_prob, rel=1e-12, abs=1e-15)


def test_pkg_config_builds_the_example(prefix: Path, classify: Path, tmp_path: Path) -> None:
    """The example compiled by hand with the flags of the installed qbinfer.pc (through
    pkg-config, which must resolve its relative prefix) prints what the CMake-built one does."""
    pkg_config = shutil.which("pkg-config")
    cc = shutil.which("cc") or shutil.which("gcc")
    assert pkg_config is not None and cc is not None, "pkg-config and a C compiler are needed"
    env = dict(os.environ, PKG_CONFIG_PATH=str(prefix / "lib" / "pkgconfig"))
    flags = _run([pkg_config, "--cflags", "--libs", "qbinfer"], "pkg-config", env=env).stdout
    libdir = _run([pkg_config, "--variable=libdir", "qbinfer"], "pkg-config", env=env).stdout
    assert Path(libdir.strip()).resolve() == (prefix / "lib").resolve()
    exe = tmp_path / "classify_pc"
    source = os.path.join(ROOT, "examples", "c", "classify.c")
    _run(
        [cc, "-std=c99", "-o", str(exe), source, *flags.split(), f"-Wl,-rpath,{libdir.strip()}"],
        "compiling classify.c with pkg-config's flags",
    )
    image = tmp_path / "digit.ppm"
    _write_pnm(image, _images()[1][1])
    by_pc = _run([str(exe), str(DIGITS), str(image)], "classify (pkg-config)").stdout
    by_cmake = _run([str(classify), str(DIGITS), str(image)], "classify (CMake)").stdout
    assert _parse_top(by_pc) == _parse_top(by_cmake), (by_pc, by_cmake)


def test_example_refuses_a_damaged_model_with_a_message(classify: Path, tmp_path: Path) -> None:
    data = DIGITS.read_bytes()
    bad = tmp_path / "truncated.qbw"
    bad.write_bytes(data[: len(data) // 2])
    image = tmp_path / "img.ppm"
    _write_pnm(image, np.zeros((32, 32, 3), np.uint8))
    proc = subprocess.run([str(classify), str(bad), str(image)], capture_output=True, text=True)
    assert proc.returncode == 1, (proc.stdout, proc.stderr)
    assert "QBINFER_ERROR_FORMAT" in proc.stderr and "truncated.qbw" in proc.stderr, proc.stderr


@pytest.fixture(scope="module")
def c_tests(prefix: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """tests/c built against the installed static library: capi_tests and hpp_test."""
    build = tmp_path_factory.mktemp("capi_tests")
    _build_against(prefix, "tests/c", build, "all")
    return build


def test_cpp_wrapper(c_tests: Path, tmp_path: Path) -> None:
    bad = tmp_path / "damaged.qbw"
    data = bytearray(DIGITS.read_bytes())
    data[-5] ^= 1
    bad.write_bytes(bytes(data))
    proc = subprocess.run([str(c_tests / "hpp_test"), str(DIGITS), str(bad)], capture_output=True)
    assert proc.returncode == 0, proc.stdout.decode() + proc.stderr.decode()
    assert b"FAIL" not in proc.stdout, proc.stdout.decode()


def test_c_failure_tests(c_tests: Path, tmp_path_factory: pytest.TempPathFactory) -> None:
    """tests/c/capi_tests.c against the static library: damaged files (truncated, bad CRC,
    hostile header sizes), a directory, a FIFO, a device, a NUL in the path, bad options and
    arguments; then every file of the fuzz corpus loaded, run and predicted without an abort."""
    exe = c_tests / "capi_tests"
    work = tmp_path_factory.mktemp("capi_work")
    corpus = sorted(str(p) for p in (Path(ROOT) / "fuzz").rglob("*.qbw"))
    assert corpus, "fuzz/corpus holds no .qbw files"
    proc = subprocess.run(
        [str(exe), str(DIGITS), str(work), *corpus], capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    assert re.search(r"^\d+ checks, 0 failures$", proc.stdout, re.M), proc.stdout
    assert proc.stdout.count("ok   survives") == len(corpus), proc.stdout
