"""The static latency model's arithmetic: no qemu, no llvm-mca, no engine in here, so that the
tests run anywhere (tests/test_latency_model.py). benchmarks/a72_latency.py drives it.

The method, per step of a model:

  1. Execution counts: tb_counts.c (a qemu-user plugin) counts how often every translation
     block of the real binary runs, split into segments at each clock_gettime system call; the
     engine's profile calls it before and after every step, so segment k of the profile is a
     step (`step_segments`).
  2. Cycles per execution of a block: its instructions (from the binary's objdump) fed to
     llvm-mca for the target CPU as one code region each; cycles per iteration of the region in
     steady state (`mca_input`, `parse_mca`).
  3. Core time of a step: the sum over its blocks of executions x cycles, at the core's clock.
  4. Memory time of a step: the bytes it moves (its inputs, output and weights, as
     qbinfer.profile counts them) at the bandwidth of the smallest cache level that holds them
     (`MemoryLevel`); zero when that is L1, whose hits llvm-mca already counts (it assumes
     every load hits L1). The step's time is core time + memory time (`step_time_s`): the
     traffic beyond L1 is taken as stalls the core does not hide. (The first version took the
     larger of the two, a roofline; on x86 that under-predicted both validation models by
     22-26%, the sum predicts them within 5%: docs/latency-model.md.)
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

__all__ = [
    "BlockKey",
    "Instruction",
    "MemoryLevel",
    "CpuModel",
    "parse_counts",
    "parse_objdump",
    "block_instructions",
    "mca_line",
    "mca_input",
    "parse_mca",
    "block_cycles",
    "mca_error_lines",
    "step_segments",
    "segment_cycles",
    "memory_seconds",
    "step_time_s",
]

# A translation block as the plugin reports it: first instruction's address, instruction
# count, length in bytes.
BlockKey = Tuple[int, int, int]


@dataclass(frozen=True)
class Instruction:
    address: int
    text: str  # as objdump printed it, without address, bytes or trailing comment
    function: str  # the symbol whose body holds it


@dataclass(frozen=True)
class MemoryLevel:
    """A level of the memory hierarchy: data sets up to `capacity_bytes` stream at
    `bandwidth_gbs` (1e9 bytes per second) for one core."""

    name: str
    capacity_bytes: float
    bandwidth_gbs: float


@dataclass(frozen=True)
class CpuModel:
    """What the model needs to know of a CPU; `sources` says where each figure comes from."""

    name: str
    mcpu: str  # llvm-mca -mcpu
    triple: str  # llvm-mca -mtriple
    ghz: float
    levels: Tuple[MemoryLevel, ...]  # smallest first; the last one holds everything
    sources: str = ""
    comment: str = "#"  # the assembler's line comment, for llvm-mca's region markers


# --------------------------------------------------------------------------- plugin output
def parse_counts(text: str) -> List[Dict[BlockKey, int]]:
    """The segments of a tb_counts.c output file: per segment, executions per block. A block
    translated more than once appears once per translation; their counts are added."""
    segments: List[Dict[BlockKey, int]] = []
    ended = False
    for number, line in enumerate(text.splitlines(), 1):
        if not line:
            continue
        if line.startswith("segment"):
            segments.append({})
            continue
        if line == "end":
            ended = True
            continue
        parts = line.split()
        if len(parts) != 4 or not segments:
            raise ValueError(f"block counts line {number}: cannot read {line!r}")
        key = (int(parts[0], 16), int(parts[1]), int(parts[2]))
        seg = segments[-1]
        seg[key] = seg.get(key, 0) + int(parts[3])
    if not ended:
        raise ValueError("block counts: no 'end' line (did the program exit normally?)")
    return segments


def step_segments(segments: Sequence[Dict[BlockKey, int]], steps: int) -> List[Dict[BlockKey, int]]:
    """The segments of the last profile run's `steps` steps. The profile reads the clock before
    and after each step and nothing reads it after the last step, so the last profile run's
    step i is segment len - 2 - 2 (steps - 1 - i) (the last segment runs from the final clock
    read to the exit)."""
    need = 2 * steps + 1
    if len(segments) < need:
        raise ValueError(
            f"{len(segments)} segments, but a profile of {steps} steps makes at least {need}"
        )
    last = len(segments) - 2
    return [segments[last - 2 * (steps - 1 - i)] for i in range(steps)]


# --------------------------------------------------------------------------- disassembly
_FUNCTION = re.compile(r"^([0-9a-f]+) <(.+)>:$")
_INSN = re.compile(r"^\s*([0-9a-f]+):\t(.*)$")


def parse_objdump(text: str, comment: str) -> Dict[int, Instruction]:
    """Instructions by address from `objdump -d --no-show-raw-insn` output. `comment` is the
    disassembler's comment marker ("//" for AArch64 and ARM, "#" for x86), cut off with what
    follows it."""
    function = "?"
    out: Dict[int, Instruction] = {}
    for line in text.splitlines():
        m = _FUNCTION.match(line)
        if m:
            function = m.group(2)
            continue
        m = _INSN.match(line)
        if not m or not m.group(2).strip():
            continue
        body = m.group(2)
        cut = body.find(comment)
        if cut >= 0:
            body = body[:cut]
        body = " ".join(body.split())
        if body:
            out[int(m.group(1), 16)] = Instruction(int(m.group(1), 16), body, function)
    return out


def block_instructions(
    instructions: Mapping[int, Instruction], ordered: Sequence[int], vaddr: int, count: int
) -> Optional[List[Instruction]]:
    """The `count` instructions from `vaddr` on (`ordered`: the sorted addresses), or None when
    the block does not start on an instruction of the disassembly (code outside the binary)."""
    import bisect

    i = bisect.bisect_left(ordered, vaddr)
    if i >= len(ordered) or ordered[i] != vaddr:
        return None
    return [instructions[a] for a in ordered[i : i + count]]


# A branch or address operand as objdump prints it: "4006f4 <main+0x14>".
_TARGET = re.compile(r"\b(?:0x)?[0-9a-f]+ <[^>]*>")


# Calls: llvm-mca gives every call a latency of 100 cycles (it cannot see the callee); the
# callee's blocks are counted and costed on their own, so the call itself is costed as a nop.
_CALL = re.compile(r"^(?:call[lq]?|bl|blr|blx)\b")


def mca_line(text: str) -> str:
    """An objdump instruction as llvm-mca's assembler takes it: a code address operand becomes
    '.', the current location (llvm-mca does not follow branches; any label will do), and a
    call becomes a nop."""
    if _CALL.match(text):
        return "nop"
    return _TARGET.sub(".", text)


def mca_input(blocks: Mapping[str, Sequence[str]], comment: str) -> Tuple[str, Dict[int, str]]:
    """One llvm-mca input with every block as a code region of its own name. Also returns the
    input's line numbers -> region name, to find the block of an error."""
    lines: List[str] = []
    where: Dict[int, str] = {}
    for name, body in blocks.items():
        lines.append(f"{comment} LLVM-MCA-BEGIN {name}")
        for text in body:
            lines.append(text)
            where[len(lines)] = name
        lines.append(f"{comment} LLVM-MCA-END {name}")
    return "\n".join(lines) + "\n", where


_REGION = re.compile(r"^\[\d+\] Code Region - (\S+)")


def parse_mca(text: str) -> Dict[str, Tuple[float, float]]:
    """Per region of an llvm-mca report: (cycles per iteration in steady state, that is Total
    Cycles / Iterations; Block RThroughput, the bound of the core's resources alone)."""
    out: Dict[str, Tuple[float, float]] = {}
    region: Optional[str] = None
    iterations = 0
    cycles = 0.0
    for line in text.splitlines():
        m = _REGION.match(line)
        if m:
            region, iterations = m.group(1), 0
            continue
        if line.startswith("Iterations:"):
            iterations = int(line.split()[1])
        elif line.startswith("Total Cycles:") and iterations > 0:
            cycles = int(line.split()[2]) / iterations
        elif line.startswith("Block RThroughput:") and region is not None and iterations > 0:
            out[region] = (cycles, float(line.split()[2]))
            region = None
    return out


_BRANCH_TARGET = re.compile(r"\b(?:0x)?([0-9a-f]+) <[^>]*>\s*$")
_REP_STRING = re.compile(r"^(?:rep|repz|repe|repnz|repne)\s+(?:movs|stos|lods|cmps|scas)")


def block_cycles(body: Sequence[Instruction], steady: float, resources: float) -> float:
    """Cycles per execution of a block from llvm-mca's two figures.

    A block that branches back to its own start is a loop on its own: llvm-mca's steady state
    (which repeats the block) is that loop, its loop-carried dependencies included. Any other
    block is one piece of a longer path, which an out-of-order core overlaps with the blocks
    around it; repeating it alone would chain each execution's outputs into the next one's
    inputs, registers the real program rewrites in between, so it is costed at the bound of
    the core's resources (issue width, ports) instead.

    An x86 rep-prefixed string instruction is a block of its own that qemu executes once per
    element: one cycle per element (8 bytes per cycle for movsq, the order of a Zen 3 core's
    rep movs on short copies), not llvm-mca's unknown-instruction default of 100."""
    if len(body) == 1 and _REP_STRING.match(body[0].text):
        return 1.0
    last = body[-1].text
    m = _BRANCH_TARGET.search(last)
    if m and int(m.group(1), 16) == body[0].address and not _CALL.match(last):
        return steady
    return resources


_ERROR = re.compile(r"^<stdin>:(\d+):\d+: error:")


def mca_error_lines(stderr: str) -> List[int]:
    """The input lines llvm-mca's assembler refused (1-based)."""
    return sorted({int(m.group(1)) for m in map(_ERROR.match, stderr.splitlines()) if m})


# --------------------------------------------------------------------------- costing
@dataclass
class SegmentCost:
    cycles: float = 0.0
    instructions: int = 0
    unmapped_instructions: int = 0  # in blocks outside the disassembly, costed at 1 per cycle
    by_function: Dict[str, float] = field(default_factory=dict)


def segment_cycles(
    segment: Mapping[BlockKey, int],
    block_cost: Mapping[BlockKey, float],
    block_function: Mapping[BlockKey, str],
) -> SegmentCost:
    """Core cycles of one segment: executions x cycles per execution, summed over its blocks,
    and split by the function each block starts in. A block with no cost (outside the
    binary's disassembly) counts one cycle per instruction, and is reported."""
    out = SegmentCost()
    for key, executions in segment.items():
        n = key[1] * executions
        out.instructions += n
        cost = block_cost.get(key)
        if cost is None:
            out.unmapped_instructions += n
            cycles = float(n)
        else:
            cycles = cost * executions
        out.cycles += cycles
        fn = block_function.get(key, "?")
        out.by_function[fn] = out.by_function.get(fn, 0.0) + cycles
    return out


def memory_seconds(bytes_moved: float, levels: Sequence[MemoryLevel]) -> Tuple[float, str]:
    """Seconds to stream `bytes_moved` at the bandwidth of the smallest level that holds them
    all (the step's working set), and that level's name."""
    if not levels:
        raise ValueError("no memory levels")
    for level in levels:
        if bytes_moved <= level.capacity_bytes:
            break
    return bytes_moved / (level.bandwidth_gbs * 1e9), level.name


def step_time_s(cycles: float, ghz: float, bytes_moved: float, levels: Sequence[MemoryLevel]):
    """(seconds, core seconds, memory seconds, level): core time plus memory time. Give the
    first level (L1) an infinite bandwidth: llvm-mca's cycles already assume L1 hits."""
    core = cycles / (ghz * 1e9)
    mem, level = memory_seconds(bytes_moved, levels)
    return core + mem, core, mem, level


def top_functions(costs: Iterable[SegmentCost], n: int) -> List[Tuple[str, float]]:
    """The `n` functions with the most cycles over `costs`, most first."""
    total: Dict[str, float] = {}
    for c in costs:
        for fn, cyc in c.by_function.items():
            total[fn] = total.get(fn, 0.0) + cyc
    return sorted(total.items(), key=lambda kv: -kv[1])[:n]
