"""The static latency model (tools/latency_model, benchmarks/a72_latency.py): its parsing and
costing arithmetic without any tool, then the qemu plugin and llvm-mca end to end on a tiny C
program when gcc, qemu-x86_64 and llvm-mca are installed (CI has them)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools" / "latency_model"))

import latency_model as lm  # noqa: E402


# ------------------------------------------------------------------------- plugin output
def test_parse_counts_adds_retranslated_blocks_per_segment():
    text = "segment 0\n400100 4 16 3\n400100 4 16 2\n400200 2 8 1\nsegment 1\n400200 2 8 7\nend\n"
    segments = lm.parse_counts(text)
    assert segments == [{(0x400100, 4, 16): 5, (0x400200, 2, 8): 1}, {(0x400200, 2, 8): 7}]


def test_parse_counts_refuses_a_truncated_file():
    with pytest.raises(ValueError, match="no 'end'"):
        lm.parse_counts("segment 0\n400100 4 16 3\n")
    with pytest.raises(ValueError, match="line 2"):
        lm.parse_counts("segment 0\n400100 4 16\nend\n")


def test_step_segments_takes_the_last_profile_run():
    # before, [t0 step0 t1] gap [t0 step1 t1] tail: segments are cut at each clock read
    segs = [{(i, 1, 4): 1} for i in range(9)]
    steps = lm.step_segments(segs, 3)
    assert [next(iter(s))[0] for s in steps] == [3, 5, 7]
    with pytest.raises(ValueError, match="at least 7"):
        lm.step_segments(segs[:6], 3)


# ------------------------------------------------------------------------- disassembly
AARCH64_DUMP = """
prog:     file format elf64-littleaarch64

Disassembly of section .text:

0000000000400100 <kernel>:
  400100:\tldr\tq0, [x1], #16
  400104:\tcnt\tv0.16b, v0.16b
  400108:\tb.ne\t400100 <kernel>  // b.any
  40010c:\tbl\t400200 <helper>

0000000000400200 <helper>:
  400200:\tret
"""

X86_DUMP = """
0000000000401000 <f>:
  401000:\tadd    %rax,%rbx
  401003:\tlea    0x10(%rip),%rcx        # 401017 <g+0x7>
  40100a:\tcall   401020 <g>
"""


def test_parse_objdump_keeps_text_and_function_and_cuts_comments():
    insns = lm.parse_objdump(AARCH64_DUMP, "//")
    assert sorted(insns) == [0x400100, 0x400104, 0x400108, 0x40010C, 0x400200]
    assert insns[0x400100].text == "ldr q0, [x1], #16"  # '#' is an immediate here, not cut
    assert insns[0x400108].text == "b.ne 400100 <kernel>"
    assert insns[0x400200].function == "helper"
    x86 = lm.parse_objdump(X86_DUMP, "#")
    assert x86[0x401003].text == "lea 0x10(%rip),%rcx"


def test_block_instructions_follow_the_address_order():
    insns = lm.parse_objdump(AARCH64_DUMP, "//")
    ordered = sorted(insns)
    body = lm.block_instructions(insns, ordered, 0x400104, 2)
    assert [i.address for i in body] == [0x400104, 0x400108]
    assert lm.block_instructions(insns, ordered, 0x400102, 2) is None  # not an instruction


def test_mca_line_drops_code_addresses_and_calls():
    assert lm.mca_line("b.ne 400100 <kernel>") == "b.ne ."
    assert lm.mca_line("tbz w0, #3, 400100 <kernel+0x8>") == "tbz w0, #3, ."
    assert lm.mca_line("jne 401020 <g>") == "jne ."
    assert lm.mca_line("bl 400200 <helper>") == "nop"
    assert lm.mca_line("call 401020 <g>") == "nop"
    assert lm.mca_line("blr x3") == "nop"
    assert lm.mca_line("add x0, x1, x2") == "add x0, x1, x2"


def test_mca_input_marks_regions_and_maps_lines_back():
    text, where = lm.mca_input({"a": ["add x0, x1, x2"], "b": ["nop", "ret"]}, "#")
    lines = text.splitlines()
    assert lines[0] == "# LLVM-MCA-BEGIN a" and lines[2] == "# LLVM-MCA-END a"
    assert {n: where[n] for n in where} == {2: "a", 5: "b", 6: "b"}
    assert lines[5 - 1] == "nop"


MCA_REPORT = """
[0] Code Region - b400100_3_12

Iterations:        100
Instructions:      300
Total Cycles:      250
Total uOps:        300

Dispatch Width:    3
Block RThroughput: 1.5

[1] Code Region - b400200_1_4

Iterations:        200
Instructions:      200
Total Cycles:      101
Total uOps:        200

Block RThroughput: 0.3
"""


def test_parse_mca_gives_cycles_per_iteration_and_resource_bound():
    assert lm.parse_mca(MCA_REPORT) == {"b400100_3_12": (2.5, 1.5), "b400200_1_4": (0.505, 0.3)}


def test_block_cycles_uses_steady_state_only_for_a_self_loop():
    insns = lm.parse_objdump(AARCH64_DUMP, "//")
    ordered = sorted(insns)
    loop = lm.block_instructions(insns, ordered, 0x400100, 3)  # ends in b.ne 400100
    assert lm.block_cycles(loop, 2.5, 1.5) == 2.5
    tail = lm.block_instructions(insns, ordered, 0x400104, 2)  # branches elsewhere
    assert lm.block_cycles(tail, 2.5, 1.5) == 1.5
    call = lm.block_instructions(insns, ordered, 0x40010C, 1)
    assert lm.block_cycles(call, 9.0, 0.5) == 0.5
    rep = [lm.Instruction(0x10, "rep movsq %ds:(%rsi),%es:(%rdi)", "f")]
    assert lm.block_cycles(rep, 100.0, 25.0) == 1.0


def test_mca_error_lines():
    err = "<stdin>:7:2: error: invalid instruction\n  data16 cs nopw\n<stdin>:3:1: error: x\n"
    assert lm.mca_error_lines(err) == [3, 7]


# ------------------------------------------------------------------------- costing
def test_segment_cycles_weights_blocks_by_executions():
    seg = {(0x10, 4, 16): 100, (0x20, 2, 8): 10, (0x99, 3, 12): 5}
    cost = {(0x10, 4, 16): 2.5, (0x20, 2, 8): 1.0}
    fn = {(0x10, 4, 16): "loop", (0x20, 2, 8): "loop", (0x99, 3, 12): "?"}
    c = lm.segment_cycles(seg, cost, fn)
    # unmapped block: one cycle per instruction
    assert c.cycles == pytest.approx(100 * 2.5 + 10 * 1.0 + 15)
    assert c.instructions == 400 + 20 + 15
    assert c.unmapped_instructions == 15
    assert c.by_function == {"loop": 260.0, "?": 15.0}
    top = lm.top_functions([c, c], 1)
    assert top == [("loop", 520.0)]


LEVELS = (
    lm.MemoryLevel("L1", 1000, float("inf")),
    lm.MemoryLevel("L2", 4000, 10.0),
    lm.MemoryLevel("DRAM", float("inf"), 1.0),
)


def test_memory_level_is_the_smallest_that_holds_the_bytes():
    assert lm.memory_seconds(1000, LEVELS) == (0.0, "L1")
    assert lm.memory_seconds(2000, LEVELS) == (pytest.approx(2e-7), "L2")
    assert lm.memory_seconds(5000, LEVELS) == (pytest.approx(5e-6), "DRAM")


def test_step_time_adds_memory_time_beyond_l1_to_core_time():
    t, core, mem, level = lm.step_time_s(3000, 1.0, 5000, LEVELS)  # 3 us core, 5 us DRAM
    assert level == "DRAM" and core == pytest.approx(3e-6) and mem == pytest.approx(5e-6)
    assert t == pytest.approx(8e-6)
    t, core, mem, level = lm.step_time_s(3000, 1.5, 800, LEVELS)  # in L1: core alone
    assert (t, mem, level) == (pytest.approx(2e-6), 0.0, "L1")


# ------------------------------------------------------------------------- end to end
LOOP_C = r"""
#include <stdio.h>
#include <time.h>
int main(int argc, char** argv) {
  struct timespec t;
  volatile long sink = 0;
  long n = 1000 + argc;  /* 1001: not a constant the compiler can fold */
  clock_gettime(CLOCK_MONOTONIC, &t);
  for (long i = 0; i < n; ++i) sink += i;
  clock_gettime(CLOCK_MONOTONIC, &t);
  printf("%ld\n", (long)sink);
  return 0;
}
"""


def _need(*tools):
    missing = [t for t in tools if shutil.which(t) is None]
    if missing:
        pytest.skip(f"not installed: {', '.join(missing)}")


def test_plugin_counts_a_loop_between_two_clock_reads(tmp_path):
    _need("gcc", "qemu-x86_64", "objdump")
    plugin = tmp_path / "libtb_counts.so"
    src = ROOT / "tools" / "latency_model" / "tb_counts.c"
    subprocess.run(
        ["gcc", "-O2", "-fPIC", "-shared", "-fvisibility=hidden", "-o", str(plugin), str(src)],
        check=True,
    )
    prog = tmp_path / "loop"
    (tmp_path / "loop.c").write_text(LOOP_C)
    try:
        subprocess.run(
            ["gcc", "-O1", "-static", "-no-pie", "-o", str(prog), str(tmp_path / "loop.c")],
            check=True,
            capture_output=True,
        )
    except subprocess.CalledProcessError:
        pytest.skip("no static libc to link against")
    out = tmp_path / "counts.txt"
    res = subprocess.run(
        ["qemu-x86_64", "-plugin", f"{plugin},out={out},marker=228", str(prog)],
        capture_output=True,
        text=True,
    )
    if res.returncode != 0 and "plugin" in res.stderr.lower():
        pytest.skip(f"this qemu-x86_64 cannot load plugins: {res.stderr.strip()}")
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == str(sum(range(1001)))
    segments = lm.parse_counts(out.read_text())
    assert len(segments) == 3  # before, between and after the two clock reads
    # the loop body is the block that runs n times (or n - 1, when the compiler peels one)
    between = segments[1]
    assert max(between.values()) in (1000, 1001)
    dump = subprocess.run(
        ["objdump", "-d", "--no-show-raw-insn", "-w", str(prog)],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    insns = lm.parse_objdump(dump, "#")
    hot = max(between, key=between.get)
    body = lm.block_instructions(insns, sorted(insns), hot[0], hot[1])
    assert body is not None and body[0].function == "main"


def test_llvm_mca_costs_a_block():
    mca = next((t for t in ("llvm-mca-19", "llvm-mca") if shutil.which(t)), None)
    if mca is None:
        pytest.skip("llvm-mca not installed")
    # four independent adds and one dependent chain of four: the chain takes about 4 cycles
    blocks = {
        "wide": ["add %rax,%rbx", "add %rcx,%rdx", "add %rsi,%rdi", "add %r8,%r9"],
        "chain": ["add %rax,%rax", "add %rax,%rax", "add %rax,%rax", "add %rax,%rax"],
    }
    text, _ = lm.mca_input(blocks, "#")
    res = subprocess.run(
        [mca, "-mtriple=x86_64-linux-gnu", "-mcpu=znver3", "-iterations=100"],
        input=text,
        capture_output=True,
        text=True,
        check=True,
    )
    cycles = lm.parse_mca(res.stdout)
    assert cycles["chain"][0] == pytest.approx(4.0, abs=0.2)
    assert cycles["wide"][0] < 2.0
    assert cycles["chain"][1] < 2.0  # the resources alone would run the chain's adds faster
