"""fuzz/qbw_mutator.py (the field-aware mutator that scripts/sanitize.sh feeds to the engine
under ASan): it never fails on any input it may meet — its own output included, down to an
empty file — and a seed gives the same files. (Its CI use draws a fresh seed per round, so a
mutator bug would otherwise surface at random.)"""

import random
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "fuzz"))

import qbw_mutator  # noqa: E402

SEED = 20261205


def _corpus():
    files = qbw_mutator.corpus_files([ROOT / "fuzz" / "corpus"])
    assert files, "fuzz/corpus is empty: run python fuzz/make_corpus.py"
    return [f.read_bytes() for f in files]


def test_mutations_of_mutations_and_short_files_never_fail():
    print(f"seed {SEED}")
    rng = random.Random(SEED)
    blobs = _corpus()
    for i in range(1500):
        blob = rng.choice(blobs)
        for _ in range(3):  # mutate the mutated file again: truncated, grown, garbled inputs
            blob, _ = qbw_mutator.mutate(blob, rng, donor=rng.choice(blobs))
            assert isinstance(blob, bytes), i
    for cut in (0, 1, 8, 63, 64, 65, 200):
        for seed in range(40):
            qbw_mutator.mutate(blobs[seed % len(blobs)][:cut], random.Random(seed), donor=None)


def test_a_mutation_changes_the_file_and_keeps_its_crc_valid_mostly():
    import struct
    import zlib

    blobs = _corpus()
    rng = random.Random(SEED)
    changed = valid_crc = 0
    for _ in range(300):
        blob = rng.choice(blobs)
        out, _ = qbw_mutator.mutate(blob, rng, donor=None)
        changed += out != blob
        if len(out) >= 64:
            crc = zlib.crc32(out[64:], zlib.crc32(out[:56]))
            valid_crc += struct.unpack_from("<I", out, 56)[0] == crc
    # A step may find nothing to change (a file without string fields) or write the value a
    # field already had; most mutations change the file.
    assert changed >= 240, changed
    assert valid_crc >= 240, valid_crc  # 97% get a recomputed CRC, so mutations reach the parser


def test_same_seed_same_files(tmp_path):
    for out in ("a", "b"):
        qbw_mutator.main(["--seed", "7", "--count", "20", "--out", str(tmp_path / out)])
    names = sorted(p.name for p in (tmp_path / "a").iterdir())
    assert names == sorted(p.name for p in (tmp_path / "b").iterdir())
    for name in names:
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
