"""qbinfer.load from every source it takes -- a path (str, os.PathLike), the file's bytes
(bytes, bytearray, memoryview, any buffer) or a binary file object -- with the same model
and the same validation, and the path rules: regular files only, checked without blocking,
and no NUL bytes."""

import io
import os
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest

import qbinfer

DIGITS = Path(qbinfer.__file__).parent / "models" / "digits_qbnet.qbw"
BLOB = DIGITS.read_bytes()


def fingerprint(model):
    x = np.random.default_rng(0).standard_normal((3, 3, 32, 32)).astype(np.float32)
    return (model.input_shape, model.class_names, model.name, model.run(x).tobytes())


SOURCES = {
    "str": lambda: str(DIGITS),
    "Path": lambda: DIGITS,
    "bytes": lambda: BLOB,
    "bytearray": lambda: bytearray(BLOB),
    "memoryview": lambda: memoryview(BLOB),
    "numpy uint8": lambda: np.frombuffer(BLOB, dtype=np.uint8),
    "strided buffer": lambda: np.repeat(np.frombuffer(BLOB, dtype=np.uint8), 2)[::2],
    "open file": lambda: open(DIGITS, "rb"),  # noqa: SIM115 (closed by the test)
    "BytesIO": lambda: io.BytesIO(BLOB),
}


@pytest.mark.parametrize("kind", list(SOURCES))
def test_every_source_gives_the_same_model(kind):
    source = SOURCES[kind]()
    try:
        got = fingerprint(qbinfer.load(source, threads=1))
    finally:
        if hasattr(source, "close"):
            source.close()
    assert got == fingerprint(qbinfer.load(str(DIGITS), threads=1))


def test_path_attribute_names_the_source():
    assert qbinfer.load(DIGITS, threads=1).path == str(DIGITS)
    assert qbinfer.load(BLOB, threads=1).path == "<bytes>"
    with open(DIGITS, "rb") as f:
        assert qbinfer.load(f, threads=1).path == str(DIGITS)
    assert qbinfer.load(io.BytesIO(BLOB), threads=1).path == "<file>"


def test_a_file_object_is_read_from_its_position():
    f = io.BytesIO(b"junk before the model" + BLOB)
    f.seek(len(b"junk before the model"))
    assert fingerprint(qbinfer.load(f, threads=1)) == fingerprint(qbinfer.load(BLOB, threads=1))


def with_crc(blob: bytearray) -> bytes:
    """The header CRC-32 (offset 56) recomputed over the bytes after the header, as the
    format page defines it, so a damaged field reaches the checks behind the checksum."""
    blob[56:60] = (zlib.crc32(bytes(blob[64:])) & 0xFFFFFFFF).to_bytes(4, "little")
    return bytes(blob)


def damaged_files():
    bad_magic = bytearray(BLOB)
    bad_magic[:3] = b"GIF"
    bad_crc = bytearray(BLOB)
    bad_crc[-1] ^= 0xFF
    bad_version = bytearray(BLOB)
    bad_version[8:10] = (7).to_bytes(2, "little")
    return {
        "empty": b"",
        "short": BLOB[:40],
        "truncated": BLOB[:-100],
        "trailing": BLOB + b"\0" * 64,
        "magic": bytes(bad_magic),
        "checksum": bytes(bad_crc),
        "version": bytes(bad_version),
        "meta": with_crc(bytearray(BLOB[:64]) + b"\xff" * (len(BLOB) - 64)),
    }


@pytest.mark.parametrize("case", list(damaged_files()))
def test_every_source_fails_with_the_same_message(tmp_path, case):
    blob = damaged_files()[case]
    path = tmp_path / "damaged.qbw"
    path.write_bytes(blob)
    messages = {}
    with pytest.raises(qbinfer.FormatError) as by_path:
        qbinfer.load(str(path), threads=1)
    messages["path"] = str(by_path.value)
    with open(path, "rb") as f, pytest.raises(qbinfer.FormatError) as by_file:
        qbinfer.load(f, threads=1)
    messages["file"] = str(by_file.value)
    for kind, source in [("bytes", blob), ("memoryview", memoryview(bytearray(blob)))]:
        with pytest.raises(qbinfer.FormatError) as by_bytes:
            qbinfer.load(source, threads=1)
        # The same message, with "<bytes>" where the path stood.
        messages[kind] = str(by_bytes.value).replace("<bytes>", str(path), 1)
    assert messages["path"].startswith(f"{path}: ")
    assert len(set(messages.values())) == 1, messages


def test_text_mode_file_is_refused():
    with open(DIGITS, encoding="latin-1") as f, pytest.raises(TypeError, match="binary mode|'rb'"):
        qbinfer.load(f)


@pytest.mark.parametrize("source", [42, 3.5, None, ["a.qbw"]])
def test_unsupported_source_types(source):
    with pytest.raises(TypeError, match="load takes a path"):
        qbinfer.load(source)


def test_bytes_naming_an_existing_file_get_a_hint(tmp_path, monkeypatch):
    monkeypatch.chdir(DIGITS.parent)
    with pytest.raises(TypeError, match="pass the path as a str or pathlib.Path"):
        qbinfer.load(DIGITS.name.encode())


@pytest.mark.parametrize("path", ["a.qbw\x00/../../etc/x", "\x00"])
def test_embedded_nul_is_refused_like_open(tmp_path, path):
    with pytest.raises(ValueError, match="embedded null byte") as ours:
        qbinfer.load(str(tmp_path / path))
    with pytest.raises(ValueError, match="embedded null byte"):
        open(tmp_path / path, "rb")  # noqa: SIM115 (the reference behaviour)
    assert "embedded null byte" in str(ours.value)
    with pytest.raises(ValueError, match="embedded null byte"):
        qbinfer.load(Path(str(tmp_path / path)))


def test_directory_is_refused(tmp_path):
    with pytest.raises(IsADirectoryError):
        qbinfer.load(tmp_path)


def test_missing_file_is_refused(tmp_path):
    with pytest.raises(FileNotFoundError):
        qbinfer.load(tmp_path / "nope.qbw")


@pytest.mark.skipif(not os.path.exists("/dev/null"), reason="needs /dev/null")
def test_device_is_refused():
    with pytest.raises(qbinfer.FormatError, match="not a regular file: it is a character device"):
        qbinfer.load("/dev/null")


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs named pipes")
def test_fifo_is_refused_without_blocking(tmp_path):
    fifo = tmp_path / "model.qbw"
    os.mkfifo(fifo)
    # In a child with a deadline: a regression would block forever in open().
    code = (
        "import sys, qbinfer\n"
        "try:\n"
        "    qbinfer.load(sys.argv[1])\n"
        "except qbinfer.FormatError as e:\n"
        "    print(e)\n"
    )
    try:
        done = subprocess.run(
            [sys.executable, "-c", code, str(fifo)], capture_output=True, text=True, timeout=60
        )
    except subprocess.TimeoutExpired:
        pytest.fail("load() blocked on a FIFO")
    assert done.returncode == 0, done.stderr
    message = done.stdout.strip()
    assert message.startswith(f"{fifo}: not a regular file") and "FIFO" in message, message
