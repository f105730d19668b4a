"""Static latency model: qbinfer's per-step latency on a CPU we do not have (the Raspberry Pi
4B's Cortex-A72), from the real binary's execution counts under qemu, costed with llvm-mca.
The method is validated first on this machine's x86 CPU against the engine's measured profile.

    python benchmarks/a72_latency.py --validate-x86                 # x86 check, 2 models
    python benchmarks/a72_latency.py --predict                      # RPi 4B, QB/QSB + Table 3
    python benchmarks/a72_latency.py --predict --models qb_net_small --json out.json

What it does (docs/latency-model.md explains the method, its figures and their sources):
  1. builds, once, under build/lm-x86, build/lm-aarch64 and build/lm-tools: the plugin (tools/latency_model/tb_counts.c) and
     qbinfer-bench statically linked and not position-independent for each target, so the
     addresses qemu reports are those of `objdump -d` of the same file;
  2. per model (224x224, random weights, as benchmarks/bench_util.py converts and caches them):
     runs `qbinfer-bench MODEL --runs 1 --warmup 0 --profile` under qemu-user with the plugin;
     the engine's profile reads the clock before and after each step, the plugin cuts its
     counts there, so every step gets the executions of every block it ran;
  3. costs every block that ran with llvm-mca (-mcpu of the target), adds executions x cycles
     per step, turns cycles into seconds at the CPU's clock, and takes the larger of that and
     the step's bytes (qbinfer.profile's count) at the bandwidth of the cache level that holds
     them;
  4. --validate-x86: runs the same binary natively (`--profile`, the engine's Model::profile,
     which Model.profile in Python calls) and prints predicted against measured per step and
     per model; --predict: the A72 figures beside the paper's RPi 4B LCE latencies, and the
     functions where the predicted A72 time goes.

Needs: qemu-user with plugin support (Debian's qemu-user 7.2 has it), gcc, g++ and
g++-aarch64-linux-gnu, binutils for each target, llvm-mca (LLVM 19 if installed, else the
newest found), and the Python package qbinfer (for the steps' bytes) and torch + weights_tools
(to build the models). qemu runs are slow (a minute or more per model): use --models to pick.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tools" / "latency_model"))

import latency_model as lm  # noqa: E402

PAPER_MODELS = ("qb_net_small", "qb_net_large", "qsb_net_small", "qsb_net_large")
VALIDATION_MODELS = ("qb_net_small", "qsb_net_large")
BUILD = ROOT / "build" / "lm-tools"  # plugin, clock probe, llvm-mca caches

# ----------------------------------------------------------------------------- the CPUs
# Raspberry Pi 4B: BCM2711, four Cortex-A72 at 1.5 GHz, 32 KB L1D per core, 1 MB L2 shared,
# LPDDR4 (Raspberry Pi's product brief and the BCM2711 page of its documentation). Bandwidths
# for one core: DRAM 5.0 GB/s from STREAM on a Pi 4B (sci-pi.org.uk/bench/stream.html: copy
# 5.5, add/triad 4.85 GB/s, one thread); L2 12 GB/s, an assumption: 8 bytes per cycle at
# 1.5 GHz, half the A72's 16-byte-per-cycle L2-to-L1 read path (no measurement was at hand);
# L1: no extra time, llvm-mca's cycles assume every load hits L1.
A72_LEVELS = (
    lm.MemoryLevel("L1", 32 * 1024, float("inf")),
    lm.MemoryLevel("L2", 1024 * 1024, 12.0),
    lm.MemoryLevel("DRAM", float("inf"), 5.0),
)
A72_SOURCES = (
    "BCM2711 (Raspberry Pi 4B): Cortex-A72 1.5 GHz, 32 KB L1D, 1 MB L2, LPDDR4; DRAM 5.0 GB/s "
    "(STREAM, one thread, sci-pi.org.uk); L2 12 GB/s assumed (8 B/cycle); L1 in llvm-mca's cycles"
)


def zen3_model(ghz: float) -> lm.CpuModel:
    """This machine (AMD EPYC, family 25 model 1: Zen 3 'Milan', as a 2-vCPU KVM guest). Its
    clock is measured (clock_probe.c), the cache sizes are lscpu's and the bandwidths round
    figures for one Zen 3 core, set before the validation ran: L2 32 B/cycle, L3 30 GB/s,
    DRAM 15 GB/s; L1 adds nothing (llvm-mca's cycles assume L1 hits)."""
    return lm.CpuModel(
        name=f"AMD EPYC (Zen 3) at a measured {ghz:.2f} GHz",
        mcpu="znver3",
        triple="x86_64-linux-gnu",
        ghz=ghz,
        levels=(
            lm.MemoryLevel("L1", 32 * 1024, float("inf")),
            lm.MemoryLevel("L2", 512 * 1024, 32 * ghz),
            lm.MemoryLevel("L3", 32 * 1024 * 1024, 30.0),
            lm.MemoryLevel("DRAM", float("inf"), 15.0),
        ),
        sources="lscpu; clock measured by tools/latency_model/clock_probe.c",
        comment="#",
    )


A72_AARCH64 = lm.CpuModel(
    name="Cortex-A72 (RPi 4B) 1.5 GHz, AArch64",
    mcpu="cortex-a72",
    triple="aarch64-linux-gnu",
    ghz=1.5,
    levels=A72_LEVELS,
    sources=A72_SOURCES,
    comment="#",  # llvm-mca 19 finds its region markers after '#' only, on AArch64 too
)

# The same core running the 32-bit Raspberry Pi OS: Thumb-2 code (Debian armhf's default), costed
# with LLVM's Cortex-A72 model for 32-bit Arm.
A72_ARMV7 = lm.CpuModel(
    name="Cortex-A72 (RPi 4B) 1.5 GHz, ARMv7 (32-bit, Thumb-2)",
    mcpu="cortex-a72",
    triple="thumbv7-linux-gnueabihf",
    ghz=1.5,
    levels=A72_LEVELS,
    sources=A72_SOURCES,
    comment="#",
)

TARGETS = {
    "x86_64": {
        "qemu": ["qemu-x86_64", "-cpu", "max"],
        "objdump": "objdump",
        "objdump_comment": "#",
        "markers": [228],  # clock_gettime
        "cmake": [],
    },
    "aarch64": {
        "qemu": ["qemu-aarch64", "-cpu", "cortex-a72"],
        "objdump": "aarch64-linux-gnu-objdump",
        "objdump_comment": "//",
        "markers": [113],  # clock_gettime
        "cmake": [
            "-DCMAKE_TOOLCHAIN_FILE=" + str(ROOT / "cmake/toolchains/aarch64-linux-gnu.cmake"),
            "-DQBINFER_CROSS_SYSROOT=/usr/aarch64-linux-gnu",
        ],
    },
    "armv7": {
        # qemu-arm has no Cortex-A72 model: "max" is an ARMv8 core in AArch32 state with NEON
        # and VFPv4, which the engine's HWCAP check needs.
        "qemu": ["qemu-arm", "-cpu", "max"],
        "objdump": "arm-linux-gnueabihf-objdump",
        "objdump_comment": "@",
        "markers": [263, 403],  # clock_gettime, clock_gettime64
        "cmake": [
            "-DCMAKE_TOOLCHAIN_FILE=" + str(ROOT / "cmake/toolchains/arm-linux-gnueabihf.cmake"),
            "-DQBINFER_CROSS_SYSROOT=/usr/arm-linux-gnueabihf",
        ],
    },
}


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def llvm_mca() -> str:
    for name in ("llvm-mca-19", "llvm-mca-18", "llvm-mca-17", "llvm-mca-16", "llvm-mca"):
        path = shutil.which(name)
        if path:
            return path
    raise SystemExit("a72_latency: llvm-mca not found (apt-get install llvm-19)")


def mca_options() -> List[str]:
    """llvm-mca's options; LLVM 19 can skip instructions without a scheduling model, older
    versions stop on them (then the refused line becomes a nop, see _run_mca)."""
    help_text = subprocess.run([llvm_mca(), "--help"], capture_output=True, text=True).stdout
    opts = ["-iterations=100", "-instruction-info=0", "-resource-pressure=0"]
    if "skip-unsupported-instructions" in help_text:
        opts.append("-skip-unsupported-instructions=lack-sched")
    return opts


# ----------------------------------------------------------------------------- building
def build_plugin() -> Path:
    out = BUILD / "libtb_counts.so"
    src = ROOT / "tools" / "latency_model" / "tb_counts.c"
    if not out.exists() or out.stat().st_mtime < src.stat().st_mtime:
        out.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            ["gcc", "-O2", "-fPIC", "-shared", "-fvisibility=hidden", "-o", str(out), str(src)],
            check=True,
        )
    return out


def build_bench(target: str, jobs: int) -> Path:
    """qbinfer-bench for `target`, static and not position-independent (see the top)."""
    d = ROOT / "build" / {"x86_64": "lm-x86", "aarch64": "lm-aarch64", "armv7": "lm-armv7"}[target]
    exe = d / "qbinfer-bench"
    if not (d / "CMakeCache.txt").exists():
        subprocess.run(
            ["cmake", "-S", str(ROOT), "-B", str(d), "-DCMAKE_BUILD_TYPE=Release"]
            + TARGETS[target]["cmake"]
            + [
                "-DQBINFER_BUILD_PYTHON=OFF",
                "-DQBINFER_BUILD_TOOLS=ON",
                "-DQBINFER_BUILD_TESTS=OFF",
                "-DCMAKE_EXE_LINKER_FLAGS=-static -no-pie",
                "-DCMAKE_POSITION_INDEPENDENT_CODE=OFF",
            ],
            check=True,
            stdout=subprocess.DEVNULL,
        )
    subprocess.run(
        ["cmake", "--build", str(d), "-j", str(jobs), "--target", "qbinfer-bench"],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    return exe


def measure_ghz() -> float:
    """The clock this core runs at now: a chain of dependent adds (one cycle each on x86) over
    the thread's CPU time (best of 5)."""
    exe = BUILD / "clock_probe"
    src = ROOT / "tools" / "latency_model" / "clock_probe.c"
    if not exe.exists() or exe.stat().st_mtime < src.stat().st_mtime:
        subprocess.run(["gcc", "-O1", "-o", str(exe), str(src)], check=True)
    out = subprocess.run([str(exe)], check=True, capture_output=True, text=True).stdout
    return float(out.split()[0])


# ----------------------------------------------------------------------------- models
def model_file(name: str) -> str:
    from bench_util import bnn_zoo_file, is_bnn_zoo, zoo_file

    if is_bnn_zoo(name):
        return bnn_zoo_file(name)[0]
    return zoo_file(name)[0]


def step_bytes(qbw: str) -> List[dict]:
    """Per step: label and the bytes qbinfer.profile counts (inputs, output, weights)."""
    import qbinfer

    prof = qbinfer.Model(qbw).profile(runs=1)
    return [{"label": s.label, "bytes": s.bytes_moved, "name": s.name} for s in prof.steps]


_PROFILE_ROW = re.compile(r"^\s*(\d+)\s+(\S+)\s+(\S+)\s+(\S+)\s+([0-9.]+)\s+([0-9.]+)\s*$")


def parse_bench_profile(text: str) -> List[Tuple[str, float]]:
    """Per step (label, microseconds) from `qbinfer-bench --profile` output."""
    rows, on = [], False
    for line in text.splitlines():
        if line.startswith("profile "):
            on = True
            continue
        m = _PROFILE_ROW.match(line) if on else None
        if m:
            rows.append((m.group(3), float(m.group(5))))
    if not rows:
        raise RuntimeError("no profile rows in qbinfer-bench output:\n" + text[-2000:])
    return rows


def measure_native(exe: Path, qbw: str, runs: int, repeats: int) -> List[float]:
    """Per-step median microseconds natively, the smallest over `repeats` processes (the
    least disturbed by the other work on a shared machine)."""
    best: Optional[List[float]] = None
    for _ in range(repeats):
        out = subprocess.run(
            [str(exe), qbw, "--runs", str(runs), "--warmup", "3", "--profile", "--top", "0"],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
        us = [t for _, t in parse_bench_profile(out)]
        best = us if best is None else [min(a, b) for a, b in zip(best, us)]
    assert best is not None
    return best


def measure_python(qbw: str, runs: int, repeats: int) -> float:
    """Whole-model microseconds from the Python package's Model.profile (one thread): the sum
    of its step medians, the smallest over `repeats` calls."""
    import qbinfer

    model = qbinfer.Model(qbw, threads=1)
    return min(model.profile(runs=runs).total_us for _ in range(repeats))


# ----------------------------------------------------------------------------- counting
def count_blocks(target: str, exe: Path, qbw: str, work: Path) -> list:
    """[segments, the bench's 'kernels' line, its stdout]; kept under build/lm-tools/counts
    and reused while neither the binary nor the model file changes (qemu is the slow part)."""
    plugin = build_plugin()
    cache = BUILD / "counts"
    cache.mkdir(parents=True, exist_ok=True)
    out = cache / f"{target}-{Path(qbw).stem}.counts"
    log_file = out.with_suffix(".stdout")
    newest = max(exe.stat().st_mtime, Path(qbw).stat().st_mtime, plugin.stat().st_mtime)
    fresh = out.exists() and log_file.exists() and out.stat().st_mtime > newest
    if not fresh:
        markers = ",".join(f"marker={m}" for m in TARGETS[target]["markers"])
        cmd = TARGETS[target]["qemu"] + [
            "-plugin",
            f"{plugin},out={out},{markers}",
            str(exe),
            qbw,
            "--runs",
            "1",
            "--warmup",
            "0",
            "--profile",
            "--top",
            "0",
        ]
        res = subprocess.run(cmd, capture_output=True, text=True)
        if res.returncode != 0:
            out.unlink(missing_ok=True)
            raise RuntimeError(f"{' '.join(cmd)} failed:\n{res.stderr[-2000:]}")
        log_file.write_text(res.stdout)
    stdout = log_file.read_text()
    kernels = [ln for ln in stdout.splitlines() if ln.startswith("kernels")]
    return [lm.parse_counts(out.read_text()), kernels[0] if kernels else "", stdout]


class BlockCoster:
    """Cycles per execution of blocks of one binary on one CPU, cached on disk."""

    def __init__(self, exe: Path, target: str, cpu: lm.CpuModel):
        self.cpu = cpu
        dis = subprocess.run(
            [TARGETS[target]["objdump"], "-d", "--no-show-raw-insn", "-w", str(exe)],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
        self.insns = lm.parse_objdump(dis, TARGETS[target]["objdump_comment"])
        self.ordered = sorted(self.insns)
        # The name carries the costing rule's version: a cache of another rule is never read.
        self.cache_path = BUILD / f"mca-v2-{target}-{cpu.mcpu}.json"
        self.cost: Dict[lm.BlockKey, float] = {}
        if self.cache_path.exists() and self.cache_path.stat().st_mtime > exe.stat().st_mtime:
            for k, v in json.loads(self.cache_path.read_text()).items():
                a, n, b = k.split(":")
                self.cost[(int(a), int(n), int(b))] = v
        self.function: Dict[lm.BlockKey, str] = {}

    def cost_blocks(self, keys) -> None:
        todo: Dict[str, List[str]] = {}
        names: Dict[str, lm.BlockKey] = {}
        for key in keys:
            body = lm.block_instructions(self.insns, self.ordered, key[0], key[1])
            if body is None:
                continue
            self.function[key] = body[0].function
            if key in self.cost:
                continue
            name = f"b{key[0]:x}_{key[1]}_{key[2]}"
            todo[name] = [lm.mca_line(i.text) for i in body]
            names[name] = key
        if not todo:
            return
        log(f"  llvm-mca ({self.cpu.mcpu}): {len(todo)} blocks")
        cycles = self._run_mca(todo)
        for name, key in names.items():
            if name in cycles:
                body = lm.block_instructions(self.insns, self.ordered, key[0], key[1])
                self.cost[key] = lm.block_cycles(body, *cycles[name])
        self.cache_path.write_text(
            json.dumps({f"{a}:{n}:{b}": v for (a, n, b), v in self.cost.items()})
        )

    def _run_mca(self, blocks: Dict[str, List[str]]) -> Dict[str, Tuple[float, float]]:
        """llvm-mca over all blocks; a line its assembler refuses becomes a nop and it runs
        again (objdump prints a few forms LLVM does not take). When llvm-mca crashes (LLVM 19
        does on some Thumb-2 blocks), the blocks are halved until the crashing ones stand
        alone: those stay uncosted (one cycle per instruction, reported as unmapped)."""
        blocks = {k: list(v) for k, v in blocks.items()}
        for _ in range(20):
            text, where = lm.mca_input(blocks, self.cpu.comment)
            res = subprocess.run(
                [llvm_mca(), f"-mtriple={self.cpu.triple}", f"-mcpu={self.cpu.mcpu}"]
                + mca_options(),
                input=text,
                capture_output=True,
                text=True,
            )
            if res.returncode == 0:
                return lm.parse_mca(res.stdout)
            if res.returncode < 0 or "Stack dump" in res.stderr:
                if len(blocks) == 1:
                    log(f"    llvm-mca crashes on block {next(iter(blocks))}: left uncosted")
                    return {}
                names = list(blocks)
                half = len(names) // 2
                out = self._run_mca({k: blocks[k] for k in names[:half]})
                out.update(self._run_mca({k: blocks[k] for k in names[half:]}))
                return out
            bad = lm.mca_error_lines(res.stderr)
            if not bad:
                raise RuntimeError("llvm-mca failed:\n" + res.stderr[-3000:])
            lines = text.splitlines()
            replaced = 0
            for ln in bad:
                name = where.get(ln)
                if name is None:
                    continue
                # position of the line inside its block
                first = min(k for k, v in where.items() if v == name)
                blocks[name][ln - first] = "nop"
                replaced += 1
                log(f"    llvm-mca refused {lines[ln - 1]!r}: counted as a nop")
            if not replaced:
                raise RuntimeError("llvm-mca failed:\n" + res.stderr[-3000:])
        raise RuntimeError("llvm-mca: too many refused lines")


def predict_model(target: str, exe: Path, qbw: str, cpu: lm.CpuModel, coster, work: Path):
    segments, kernels, stdout = count_blocks(target, exe, qbw, work)
    info = step_bytes(qbw)
    labels = [label for label, _ in parse_bench_profile(stdout)]
    if labels != [m["label"] for m in info]:
        raise RuntimeError(
            f"{qbw}: the Python package's steps {[m['label'] for m in info]} are not those of "
            f"{exe} ({labels}): install qbinfer from this checkout"
        )
    steps = lm.step_segments(segments, len(info))
    keys = set().union(*steps)
    coster.cost_blocks(keys)
    rows = []
    costs = []
    for i, (seg, meta) in enumerate(zip(steps, info)):
        c = lm.segment_cycles(seg, coster.cost, coster.function)
        costs.append(c)
        t, core, mem, level = lm.step_time_s(c.cycles, cpu.ghz, meta["bytes"], cpu.levels)
        rows.append(
            {
                "step": i,
                "label": meta["label"],
                "name": meta["name"],
                "bytes": meta["bytes"],
                "instructions": c.instructions,
                "unmapped_instructions": c.unmapped_instructions,
                "cycles": c.cycles,
                "core_us": core * 1e6,
                "memory_us": mem * 1e6,
                "level": level,
                "us": t * 1e6,
                "top": sorted(c.by_function.items(), key=lambda kv: -kv[1])[:3],
            }
        )
    return {"kernels": kernels, "steps": rows, "total_us": sum(r["us"] for r in rows)}, costs


# ----------------------------------------------------------------------------- reports
def demangle(names: Sequence[str]) -> List[str]:
    """C++ names as c++filt prints them (unchanged when it is not installed)."""
    tool = shutil.which("c++filt")
    if tool is None:
        return list(names)
    out = subprocess.run([tool], input="\n".join(names), capture_output=True, text=True).stdout
    lines = out.splitlines()
    return lines if len(lines) == len(names) else list(names)


def short(fn: str, width: int = 90) -> str:
    """A demangled function without its namespace noise and argument list."""
    fn = fn.replace("(anonymous namespace)::", "").replace("qbinfer::", "")
    if fn.endswith(")") or fn.endswith(") const"):
        depth, i = 0, len(fn) - 1
        while i >= 0:
            if fn[i] == ")":
                depth += 1
            elif fn[i] == "(":
                depth -= 1
                if depth == 0:
                    fn = fn[:i]
                    break
            i -= 1
    return fn if len(fn) <= width else fn[: width - 3] + "..."


def validate_x86(models: Sequence[str], runs: int, repeats: int, jobs: int, work: Path) -> dict:
    exe = build_bench("x86_64", jobs)
    ghz = measure_ghz()
    cpu = zen3_model(ghz)
    log(f"x86: {cpu.name}")
    coster = BlockCoster(exe, "x86_64", cpu)
    out = {"cpu": cpu.name, "ghz": ghz, "models": {}}
    for name in models:
        qbw = model_file(name)
        log(f"{name}: counting under qemu-x86_64")
        pred, _ = predict_model("x86_64", exe, qbw, cpu, coster, work)
        log(f"{name}: measuring natively")
        measured = measure_native(exe, qbw, runs, repeats)
        for r, m in zip(pred["steps"], measured):
            r["measured_us"] = m
        pred["measured_total_us"] = sum(measured)
        pred["python_profile_total_us"] = measure_python(qbw, runs, repeats)
        out["models"][name] = pred
        print_validation(name, pred)
    return out


def print_validation(name: str, pred: dict) -> None:
    print(f"\n{name}: predicted vs measured on this machine ({pred['kernels']})")
    print(
        f"{'#':>3} {'pred us':>9} {'core':>8} {'mem':>8} {'lvl':>4} {'meas us':>9} {'err':>6}  step"
    )
    for r in pred["steps"]:
        err = r["us"] / r["measured_us"] - 1 if r["measured_us"] > 0 else float("nan")
        print(
            f"{r['step']:>3} {r['us']:>9.1f} {r['core_us']:>8.1f} {r['memory_us']:>8.1f} "
            f"{r['level']:>4} {r['measured_us']:>9.1f} {100 * err:>+5.0f}%  {r['label']}"
        )
    tot, meas = pred["total_us"], pred["measured_total_us"]
    if "python_profile_total_us" in pred:
        py = pred["python_profile_total_us"]
        print(f"Python Model.profile: {py / 1e3:.2f} ms, error {100 * (tot / py - 1):+.1f}%")
    print(
        f"whole model: predicted {tot / 1e3:.2f} ms, measured {meas / 1e3:.2f} ms, "
        f"error {100 * (tot / meas - 1):+.1f}%"
    )


def predict_a72(models: Sequence[str], jobs: int, work: Path, target: str = "aarch64") -> dict:
    from weights_tools.table3_zoo import TABLE3_NETWORKS

    paper = {n.name: (n.label, n.paper_rpi4b_ms) for n in TABLE3_NETWORKS}
    exe = build_bench(target, jobs)
    cpu = A72_AARCH64 if target == "aarch64" else A72_ARMV7
    coster = BlockCoster(exe, target, cpu)
    out = {"cpu": cpu.name, "sources": cpu.sources, "models": {}}
    all_costs = []
    for name in models:
        try:
            qbw = model_file(name)
        except Exception as e:  # a network that does not convert keeps its row
            out["models"][name] = {"error": f"{type(e).__name__}: {e}"}
            log(f"{name}: does not convert: {e}")
            continue
        log(f"{name}: counting under {' '.join(TARGETS[target]['qemu'])}")
        pred, costs = predict_model(target, exe, qbw, cpu, coster, work)
        if name in PAPER_MODELS or not set(models) & set(PAPER_MODELS):
            all_costs += costs
        label, ms = paper.get(name, (name, None))
        pred["label"], pred["paper_lce_ms"] = label, ms
        out["models"][name] = pred
        print(
            f"{label}: predicted {pred['total_us'] / 1e3:.1f} ms (model estimate), "
            f"paper LCE {ms} ms"
        )
    cyc = sum(c.cycles for c in all_costs) or 1.0
    top = lm.top_functions(all_costs, 15)
    names = demangle([fn for fn, _ in top])
    out["hot_functions"] = [(short(n), cycles / cyc) for n, (_, cycles) in zip(names, top)]
    return out


def markdown(result: dict) -> str:
    """The tables of docs/latency-model.md."""
    out: List[str] = []
    x86 = result.get("x86")
    if x86:
        out.append(f"### x86 validation: {x86['cpu']}\n")
        out.append(
            "| model | predicted ms | measured ms (qbinfer-bench --profile) | error | "
            "measured ms (Python Model.profile) | error |"
        )
        out.append("|---|---:|---:|---:|---:|---:|")
        for name, m in x86["models"].items():
            p, q = m["total_us"] / 1e3, m["measured_total_us"] / 1e3
            py = m.get("python_profile_total_us", 0.0) / 1e3
            py_cells = f"{py:.2f} | {100 * (p / py - 1):+.0f}%" if py > 0 else "- | -"
            out.append(f"| {name} | {p:.2f} | {q:.2f} | {100 * (p / q - 1):+.0f}% | {py_cells} |")
        for name, m in x86["models"].items():
            out.append(f"\n{name}, per step ({m['kernels']}):\n")
            out.append(
                "| # | step | core us | memory us (level) | predicted us | measured us | error |"
            )
            out.append("|---:|---|---:|---:|---:|---:|---:|")
            for r in m["steps"]:
                err = 100 * (r["us"] / r["measured_us"] - 1) if r["measured_us"] > 0 else 0.0
                out.append(
                    f"| {r['step']} | {r['label']} | {r['core_us']:.1f} | "
                    f"{r['memory_us']:.1f} ({r['level']}) | {r['us']:.1f} | "
                    f"{r['measured_us']:.1f} | {err:+.0f}% |"
                )
    a72 = result.get("a72")
    if a72:
        out.append(
            f"\n### RPi 4B predictions (a model's estimate, not a measurement): {a72['cpu']}\n"
        )
        out.append(
            "| network | qbinfer, predicted ms (model estimate) | of which memory ms | "
            "instructions llvm-mca could not cost | paper: LCE on an RPi 4B, ms |"
        )
        out.append("|---|---:|---:|---:|---:|")
        for name, m in a72["models"].items():
            if "error" in m:
                out.append(f"| {name} | does not convert: {m['error']} | |")
                continue
            mem = sum(r["memory_us"] for r in m["steps"]) / 1e3
            paper_ms = m["paper_lce_ms"] if m["paper_lce_ms"] is not None else "-"
            n_all = sum(r["instructions"] for r in m["steps"]) or 1
            uncosted = 100 * sum(r["unmapped_instructions"] for r in m["steps"]) / n_all
            out.append(
                f"| {m['label']} | {m['total_us'] / 1e3:.1f} | {mem:.1f} | {uncosted:.1f}% | "
                f"{paper_ms} |"
            )
        out.append("\nWhere the predicted time goes, by the step's main op (ms: core + memory):\n")
        names = [n for n in PAPER_MODELS if n in a72["models"] and "error" not in a72["models"][n]]
        kinds: List[str] = []
        split: Dict[str, Dict[str, List[float]]] = {}
        for n in names:
            split[n] = {}
            for r in a72["models"][n]["steps"]:
                kind = r["label"].split("+")[0]
                if kind not in kinds:
                    kinds.append(kind)
                acc = split[n].setdefault(kind, [0.0, 0.0])
                acc[0] += r["core_us"] / 1e3
                acc[1] += r["memory_us"] / 1e3
        out.append("| network | " + " | ".join(kinds) + " |")
        out.append("|---|" + "---:|" * len(kinds))
        for n in names:
            cells = []
            for kind in kinds:
                c, m = split[n].get(kind, [0.0, 0.0])
                cells.append(f"{c + m:.1f} ({c:.1f} + {m:.1f})")
            out.append(f"| {a72['models'][n]['label']} | " + " | ".join(cells) + " |")
        out.append(
            "\nWhere the predicted A72 core cycles of the four QB/QSB-Nets go, by function:\n"
        )
        out.append("| function | share of core cycles |")
        out.append("|---|---:|")
        for fn, share in a72["hot_functions"]:
            out.append(f"| `{fn}` | {100 * share:.1f}% |")
    return "\n".join(out) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--validate-x86", action="store_true", help="predicted vs measured here")
    p.add_argument("--predict", action="store_true", help="RPi 4B (Cortex-A72) predictions")
    p.add_argument(
        "--target",
        choices=("aarch64", "armv7"),
        default="aarch64",
        help="--predict: the 64-bit (default) or the 32-bit Raspberry Pi OS build",
    )
    p.add_argument("--models", nargs="+", help="zoo names (default: see --help of each mode)")
    p.add_argument("--runs", type=int, default=20, help="native profile runs (validation)")
    p.add_argument("--repeats", type=int, default=3, help="native profile processes")
    p.add_argument("--jobs", type=int, default=2, help="parallel compile jobs")
    p.add_argument("--json", help="write every number here")
    p.add_argument("--markdown", help="write the tables (docs/latency-model.md) here")
    p.add_argument("--from-json", help="only write --markdown from an earlier --json")
    args = p.parse_args(argv)
    if args.from_json:
        if args.markdown:
            Path(args.markdown).write_text(markdown(json.loads(Path(args.from_json).read_text())))
        return 0
    if not (args.validate_x86 or args.predict):
        p.error("give --validate-x86 and/or --predict")
    result = {}
    with tempfile.TemporaryDirectory(prefix="qbinfer-latmodel-") as tmp:
        work = Path(tmp)
        if args.validate_x86:
            result["x86"] = validate_x86(
                args.models or VALIDATION_MODELS, args.runs, args.repeats, args.jobs, work
            )
        if args.predict:
            from weights_tools.table3_zoo import TABLE3_NETWORKS

            default = list(PAPER_MODELS) + [
                n.name for n in TABLE3_NETWORKS if n.name not in PAPER_MODELS
            ]
            result["a72"] = predict_a72(args.models or default, args.jobs, work, args.target)
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1))
    if args.markdown:
        Path(args.markdown).write_text(markdown(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
