"""Field-aware mutations of .qbw files, for the engine's loader under a sanitizer.

    python fuzz/qbw_mutator.py --seed 1 --count 2000 --out DIR [CORPUS_FILE_OR_DIR ...]

Each output file is one corpus file (default: fuzz/corpus/) with 1-3 mutations, written so that
the mutation reaches the code it aims at:

- the file is walked field by field (docs/format.md: header, every meta field with its type,
  every tensor's data range), so a mutation sets *a field* (a count, a dim, an offset, an op
  type, an attribute, an index, a string length, a preprocessing float, an INT8 code, a tail
  bit) to a value chosen for that field's type: 0, 1, the type's maximum, 2^31, a neighbour of
  the current value, another field's value, NaN/inf/huge for floats;
- the header's CRC is recomputed (and, most of the time, file_size), or the file would be
  refused by its checksum before any of that was parsed; a few files keep the stale CRC or
  size on purpose;
- some files are truncated, extended, or get random bytes flipped or spliced from another file.

Deterministic: the same seed and corpus give the same files (names carry the seed and index).
The mutation log goes to DIR/mutations.txt, one line per file, to reproduce a finding.
Test code, not part of the installed packages.
"""

from __future__ import annotations

import argparse
import random
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional, Tuple

ROOT = Path(__file__).resolve().parent.parent
CORPUS = ROOT / "fuzz" / "corpus"

# struct formats of the field kinds
KINDS = {"u16": "<H", "u32": "<I", "u64": "<Q", "i64": "<q", "f32": "<f"}


@dataclass
class Field:
    offset: int
    kind: str  # u16 u32 u64 i64 f32 | data (a tensor's bytes) | str (string bytes)
    name: str
    size: int = 0  # bytes, for data / str
    dtype: int = -1  # the tensor's dtype code, for data


class _Walk:
    """Reads the fields in file order; stops quietly where the (possibly mutated) file ends."""

    def __init__(self, blob: bytes, base: int):
        self.blob, self.pos, self.fields = blob, base, []  # type: ignore[var-annotated]

    def take(self, kind: str, name: str) -> int:
        fmt = KINDS[kind]
        size = struct.calcsize(fmt)
        if self.pos + size > len(self.blob):
            raise EOFError
        (v,) = struct.unpack_from(fmt, self.blob, self.pos)
        self.fields.append(Field(self.pos, kind, name))
        self.pos += size
        return v

    def string(self, name: str) -> None:
        n = self.take("u32", name + ".len")
        if n > 65535 or self.pos + n > len(self.blob):
            raise EOFError
        if n:
            self.fields.append(Field(self.pos, "str", name, size=n))
        self.pos += n


def fields_of(blob: bytes) -> List[Field]:
    """Every field of a .qbw file, in file order (as far as it parses)."""
    fields = [
        Field(8, "u16", "version_major"),
        Field(10, "u16", "version_minor"),
        Field(12, "u32", "header_size"),
        Field(16, "u64", "file_size"),
        Field(24, "u64", "meta_offset"),
        Field(32, "u64", "meta_size"),
        Field(40, "u64", "data_offset"),
        Field(48, "u64", "data_size"),
        Field(60, "u32", "reserved"),
    ]
    if len(blob) < 64:
        return fields
    meta_offset, _, data_offset = struct.unpack_from("<QQQ", blob, 24)
    w = _Walk(blob, meta_offset)
    tensors: List[Tuple[int, int, int]] = []  # (dtype, offset, nbytes)
    try:
        w.string("producer")
        w.string("model_name")
        for t in range(min(w.take("u32", "n_tensors"), 100_000)):
            w.string(f"tensor{t}.name")
            dtype = w.take("u32", f"tensor{t}.dtype")
            for d in range(min(w.take("u32", f"tensor{t}.ndim"), 8)):
                w.take("u64", f"tensor{t}.dim{d}")
            off = w.take("u64", f"tensor{t}.offset")
            nbytes = w.take("u64", f"tensor{t}.nbytes")
            tensors.append((dtype, off, nbytes))
        for v in range(min(w.take("u32", "n_values"), 100_000)):
            w.string(f"value{v}.name")
            for part in ("dtype", "height", "width", "channels"):
                w.take("u32", f"value{v}.{part}")
        w.take("u32", "input_value")
        w.take("u32", "output_value")
        for o in range(min(w.take("u32", "n_ops"), 100_000)):
            w.take("u32", f"op{o}.type")
            w.string(f"op{o}.name")
            for part in ("inputs", "outputs", "tensors"):
                for i in range(min(w.take("u32", f"op{o}.n_{part}"), 1000)):
                    w.take("u32", f"op{o}.{part}{i}")
            for i in range(min(w.take("u32", f"op{o}.n_attrs"), 1000)):
                w.take("i64", f"op{o}.attr{i}")
        for part in ("resize_short", "crop_height", "crop_width"):
            w.take("u32", f"preproc.{part}")
        for i in range(7):
            w.take("f32", f"preproc.float{i}")
        for c in range(min(w.take("u32", "n_classes"), 100_000)):
            w.string(f"class{c}")
        w.string("metadata_json")
    except EOFError:
        pass
    fields += w.fields
    for t, (dtype, off, nbytes) in enumerate(tensors):
        start = data_offset + off
        if nbytes and start + nbytes <= len(blob):
            fields.append(Field(start, "data", f"tensor{t}.data", size=nbytes, dtype=dtype))
    return fields


def _interesting(kind: str, current: int, rng: random.Random, others: List[int]) -> object:
    if kind == "f32":
        return rng.choice(
            [0.0, -0.0, 1.0, -1.0, float("nan"), float("inf"), -float("inf"), 3.4e38, 1e-45]
        )
    bits = {"u16": 16, "u32": 32, "u64": 64, "i64": 64}[kind]
    top = (1 << (bits - 1)) - 1 if kind == "i64" else (1 << bits) - 1
    low = -(1 << 63) if kind == "i64" else 0
    pool = [0, 1, 2, 3, 7, 64, 65, 255, 4096, 32767, 65535, 1 << 31, (1 << 31) - 1, top, top - 1]
    if kind == "i64":
        pool += [-1, -2, low]
    pool += [current + d for d in (-2, -1, 1, 2, 63, 64)] + [current * 2, current * 64]
    pool += others
    return min(max(rng.choice(pool), low), top)


def _pack(kind: str, value: object) -> bytes:
    return struct.pack(KINDS[kind], value)


def _mutate_data(blob: bytearray, f: Field, rng: random.Random) -> str:
    i = f.offset + rng.randrange(f.size)
    if f.dtype == 1:  # i8 codes: -128 is refused by the format
        blob[i] = 0x80 if rng.random() < 0.5 else rng.randrange(256)
        return f"{f.name}[{i - f.offset}] i8 <- {blob[i]:#x}"
    if f.dtype == 2 and f.size >= 8:  # bits: set a high (tail) bit of a word
        w = f.offset + 8 * rng.randrange(f.size // 8)
        blob[w + 7] |= 0x80 >> rng.randrange(8)
        return f"{f.name} word at {w - f.offset}: high bit set"
    if f.dtype == 0 and f.size >= 4:  # f32
        j = f.offset + 4 * rng.randrange(f.size // 4)
        v = _interesting("f32", 0, rng, [])
        blob[j : j + 4] = _pack("f32", v)
        return f"{f.name}[{(j - f.offset) // 4}] f32 <- {v}"
    blob[i] ^= 1 << rng.randrange(8)
    return f"{f.name} byte {i - f.offset} flipped"


def mutate(blob: bytes, rng: random.Random, donor: Optional[bytes] = None) -> Tuple[bytes, str]:
    """One mutated file and a description of what was done."""
    out = bytearray(blob)
    steps = []
    for _ in range(rng.choice((1, 1, 1, 2, 3))):
        # Walked again after each step: a truncation or insertion moves what follows.
        fields = [f for f in fields_of(bytes(out)) if f.offset + max(f.size, 8) <= len(out)]
        scalars = [f for f in fields if f.kind in KINDS]
        r = rng.random()
        if r < 0.62 and scalars:
            f = rng.choice(scalars)
            (cur,) = struct.unpack_from(KINDS[f.kind], out, f.offset)
            same = [
                struct.unpack_from(KINDS[g.kind], out, g.offset)[0]
                for g in rng.sample(scalars, min(4, len(scalars)))
                if g.kind == f.kind
            ]
            if f.kind == "f32":
                v = _interesting("f32", 0, rng, [])
            else:
                v = _interesting(f.kind, int(cur), rng, [int(s) for s in same])
            out[f.offset : f.offset + struct.calcsize(KINDS[f.kind])] = _pack(f.kind, v)
            steps.append(f"{f.name} {cur} -> {v}")
        elif r < 0.80:
            data = [f for f in fields if f.kind == "data"]
            if data:
                steps.append(_mutate_data(out, rng.choice(data), rng))
        elif r < 0.86:
            strs = [f for f in fields if f.kind == "str"]
            if strs:
                f = rng.choice(strs)
                i = f.offset + rng.randrange(f.size)
                out[i] = rng.choice([0, 0x1B, 0x0A, 0xFF, 0xC3, 0x80])
                steps.append(f"{f.name} byte {i - f.offset} <- {out[i]:#x}")
        elif r < 0.91:
            cut = rng.randrange(len(out)) if out else 0  # an earlier step may have cut it all
            del out[cut:]
            steps.append(f"truncated at {cut}")
        elif r < 0.94:
            n = rng.choice((1, 7, 64, 4096))
            at = rng.randrange(64, len(out) + 1) if len(out) > 64 else len(out)
            out[at:at] = bytes(rng.randrange(256) for _ in range(n))
            steps.append(f"inserted {n} bytes at {at}")
        elif r < 0.97 and donor is not None and len(donor) > 64 and len(out) > 64:
            a = rng.randrange(64, len(out))
            b = rng.randrange(64, len(donor))
            n = min(rng.choice((8, 64, 512)), len(out) - a, len(donor) - b)
            out[a : a + n] = donor[b : b + n]
            steps.append(f"spliced {n} bytes of another file at {a}")
        else:
            for _ in range(rng.choice((1, 4, 16))):
                i = rng.randrange(len(out)) if out else 0
                if out:
                    out[i] ^= 1 << rng.randrange(8)
            steps.append("random bit flips")
    if len(out) >= 64:
        if rng.random() < 0.9:
            out[16:24] = _pack("u64", len(out))
        else:
            steps.append("file_size left stale")
        if rng.random() < 0.97:
            crc = zlib.crc32(bytes(out[64:]), zlib.crc32(bytes(out[:56])))
            out[56:60] = _pack("u32", crc)
        else:
            steps.append("CRC left stale")
    return bytes(out), "; ".join(steps)


def corpus_files(paths: List[Path]) -> List[Path]:
    files: List[Path] = []
    for p in paths:
        files += sorted(p.glob("*.qbw")) if p.is_dir() else [p]
    return files


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("corpus", nargs="*", type=Path, default=[CORPUS])
    p.add_argument("--seed", type=int, required=True)
    p.add_argument("--count", type=int, default=1000)
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args(argv)
    files = corpus_files(args.corpus)
    if not files:
        p.error("no corpus files")
    blobs = [f.read_bytes() for f in files]
    rng = random.Random(args.seed)
    args.out.mkdir(parents=True, exist_ok=True)
    with open(args.out / "mutations.txt", "w") as log:
        for i in range(args.count):
            k = rng.randrange(len(blobs))
            mutated, what = mutate(blobs[k], rng, donor=rng.choice(blobs))
            name = f"s{args.seed}_{i:06d}.qbw"
            (args.out / name).write_bytes(mutated)
            log.write(f"{name}\t{files[k].name}\t{what}\n")
    print(
        f"wrote {args.count} files from {len(files)} corpus files to {args.out} (seed {args.seed})"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
