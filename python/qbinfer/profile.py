"""Per-step profile of a model: `Model.profile(x)` returns a `Profile`.

A step is what the engine runs as one unit after load-time fusion (a binary conv with the ADD,
PRELU and AFFINE after it, for instance); each covers one or more ops of the file. The converter
records, per op, the ONNX nodes and the PyTorch modules it came from (the file's metadata,
"op_sources"), so a step is named by the layers of the PyTorch model. Files written before that
record existed still profile: their steps are named by their op types.

Times are the median over the runs of one image (batch 1), measured by the engine around each
step. Bytes moved are an estimate of the traffic a step cannot avoid: the activations it reads
from other steps, the activation it writes, and its weights as stored in the file.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from typing import Any, Dict, List, Optional, Sequence, Tuple

from .text import clip_middle, printable

__all__ = ["Profile", "StepProfile", "build_profile"]

# Ops whose inputs are packed bits (op schema); every other op reads float32, except those
# that pass their input's type through (see `_input_bytes`).
_BITS_INPUT = frozenset({"BCONV2D", "BCONV2D_GENERAL", "BFC"})
_SAME_TYPE = frozenset({"CONCAT", "MAXPOOL"})


@dataclass
class StepProfile:
    """One step of a run: what it is, where it came from, what it cost."""

    index: int  # position in run order
    label: str  # its op types, 'BCONV2D+ADD+PRELU+AFFINE'
    kind: str  # 'op', 'conv_chain' or 'epilogue_chain'
    ops: List[int]  # the file's op indices it runs
    output: Tuple[int, int, int]  # H, W, C
    time_us: float  # median over the runs
    start_us: float  # where it starts in a run: the sum of the medians before it
    share: float  # of the whole run, 0..1
    onnx_nodes: List[str] = field(default_factory=list)
    modules: List[str] = field(default_factory=list)
    bytes_moved: int = 0
    float_macs: int = 0
    binary_macs: int = 0

    @property
    def name(self) -> str:
        """The PyTorch module of its main op, else its op types."""
        return self.modules[0] if self.modules else self.label

    @property
    def float_gmacs(self) -> float:
        """Float multiply-accumulates per second achieved, in 1e9."""
        return self.float_macs / (self.time_us * 1e3) if self.time_us > 0 else 0.0

    @property
    def binary_gmacs(self) -> float:
        """Binary (XNOR-popcount) multiply-accumulates per second achieved, in 1e9."""
        return self.binary_macs / (self.time_us * 1e3) if self.time_us > 0 else 0.0

    @property
    def gbytes(self) -> float:
        """Bytes moved per second, in 1e9."""
        return self.bytes_moved / (self.time_us * 1e3) if self.time_us > 0 else 0.0


@dataclass
class Profile:
    """The steps of one model in run order (`steps`), with the totals and the run's settings.
    `str()` is the table `qbinfer profile` prints."""

    model: str
    steps: List[StepProfile]
    runs: int
    threads: int
    isa: str
    named: bool  # whether the file records the ONNX nodes and PyTorch modules of its ops

    @property
    def total_us(self) -> float:
        return sum(s.time_us for s in self.steps)

    def __str__(self) -> str:
        return self.table()

    def table(self, name_width: int = 0) -> str:
        """One row per step: time, share, MAC rates, bytes moved, the PyTorch module of its main
        op (whole; `name_width` > 0 shortens longer names in the middle) and its op types."""

        def cell(text: str) -> str:
            text = printable(text)
            return clip_middle(text, name_width) if name_width > 0 else text

        total = self.total_us
        names = [cell(s.name) if s.modules else "-" for s in self.steps]
        width = max([len("layer (PyTorch module)")] + [len(n) for n in names])
        lines = [
            f"{printable(self.model)}: {total / 1e3:.3f} ms per image (sum of the step medians "
            f"over {self.runs} runs), {self.threads} thread(s), {self.isa}",
            f"{'#':>3} {'time us':>9} {'share':>6} {'GMAC/s':>7} {'bGMAC/s':>8} {'MB':>7}  "
            f"{'layer (PyTorch module)':<{width}}  step (fused ops)",
        ]
        for s, name in zip(self.steps, names):
            lines.append(
                f"{s.index:>3} {s.time_us:>9.1f} {100 * s.share:>5.1f}% "
                f"{s.float_gmacs:>7.2f} {s.binary_gmacs:>8.1f} {s.bytes_moved / 1e6:>7.3f}  "
                f"{name:<{width}}  {printable(s.label)}"
            )
        float_macs = sum(s.float_macs for s in self.steps)
        binary_macs = sum(s.binary_macs for s in self.steps)
        lines.append(
            f"total: {len(self.steps)} steps, {float_macs / 1e6:.1f} M float MACs, "
            f"{binary_macs / 1e6:.1f} M binary MACs, "
            f"{sum(s.bytes_moved for s in self.steps) / 1e6:.2f} MB moved "
            "(GMAC/s: float MACs per second, bGMAC/s: binary MACs per second, in 1e9)"
        )
        if not self.named:
            lines.append(
                "(this file does not record the PyTorch modules of its ops: convert it again "
                "to see them)"
            )
        return "\n".join(lines)

    def to_dict(self) -> Dict[str, Any]:
        """Plain data (JSON-serialisable): the settings, the totals and every step."""
        steps = []
        for s in self.steps:
            d = asdict(s)
            d.update(
                name=s.name,
                float_gmacs=s.float_gmacs,
                binary_gmacs=s.binary_gmacs,
                gbytes=s.gbytes,
            )
            steps.append(d)
        return {
            "model": self.model,
            "runs": self.runs,
            "threads": self.threads,
            "isa": self.isa,
            "total_us": self.total_us,
            "steps": steps,
        }

    def chrome_trace(self) -> Dict[str, Any]:
        """The run as a Chrome trace (the JSON object format of chrome://tracing and Perfetto):
        one complete ("X") event per step, back to back at their median times."""
        events: List[Dict[str, Any]] = [
            {"name": "process_name", "ph": "M", "pid": 1, "args": {"name": self.model}},
            {"name": "thread_name", "ph": "M", "pid": 1, "tid": 1, "args": {"name": "run"}},
        ]
        for s in self.steps:
            events.append(
                {
                    "name": s.name,
                    "cat": s.label,
                    "ph": "X",
                    "pid": 1,
                    "tid": 1,
                    "ts": round(s.start_us, 3),
                    "dur": round(s.time_us, 3),
                    "args": {
                        "step": s.index,
                        "label": s.label,
                        "ops": s.ops,
                        "modules": s.modules,
                        "onnx_nodes": s.onnx_nodes,
                        "output_hwc": list(s.output),
                        "share": round(s.share, 5),
                        "bytes_moved": s.bytes_moved,
                        "float_macs": s.float_macs,
                        "binary_macs": s.binary_macs,
                        "float_gmac_per_s": round(s.float_gmacs, 3),
                        "binary_gmac_per_s": round(s.binary_gmacs, 3),
                    },
                }
            )
        return {
            "traceEvents": events,
            "displayTimeUnit": "ms",
            "otherData": {
                "model": self.model,
                "runs": self.runs,
                "threads": self.threads,
                "isa": self.isa,
                "note": "step times are medians over the runs, laid end to end",
            },
        }

    def save_chrome_trace(self, path: "str | os.PathLike[str]") -> None:
        with open(path, "w", encoding="utf-8") as f:
            json.dump(self.chrome_trace(), f)

    def plot(self, path: "str | os.PathLike[str]", title: Optional[str] = None) -> None:
        """A PNG bar chart of the time per step (layer names on the left, run order top to
        bottom). Needs matplotlib (`pip install 'qbinfer[plot]'`)."""
        try:
            from matplotlib.backends.backend_agg import FigureCanvasAgg
            from matplotlib.figure import Figure
        except ImportError as exc:
            raise ImportError(
                "the profile chart needs matplotlib: pip install 'qbinfer[plot]' "
                f"(or pip install matplotlib) ({exc})"
            ) from None
        steps = self.steps
        names = [clip_middle(printable(f"{s.name}  ({_short_label(s.label)})"), 56) for s in steps]
        colours = [_COLOURS[_family(s.label)] for s in steps]
        height = max(3.0, 0.18 * len(steps) + 1.2)
        fig = Figure(figsize=(11, height), dpi=100)
        FigureCanvasAgg(fig)
        ax = fig.add_subplot()
        ys = list(range(len(steps)))
        ax.barh(ys, [s.time_us for s in steps], color=colours, height=0.8)
        ax.set_yticks(ys)
        ax.set_yticklabels(names, fontsize=6 if len(steps) > 40 else 8)
        ax.invert_yaxis()
        ax.set_ylim(len(steps) - 0.5, -0.5)
        ax.set_xlabel("median time per step (µs), batch 1")
        ax.grid(axis="x", alpha=0.3)
        ax.set_title(
            printable(title)
            if title
            else f"{printable(self.model)}: {self.total_us / 1e3:.2f} ms per image, "
            f"{self.threads} thread(s), {self.isa}",
            fontsize=10,
        )
        from matplotlib.patches import Patch

        used = [f for f in _COLOURS if any(_family(s.label) == f for s in steps)]
        ax.legend(handles=[Patch(color=_COLOURS[f], label=f) for f in used], fontsize=8)
        fig.tight_layout()
        fig.savefig(os.fspath(path), format="png")


# Bar colours by the kind of the step's main op.
_COLOURS = {
    "binary conv / FC": "#1f77b4",
    "float conv / FC": "#d62728",
    "depthwise conv": "#ff7f0e",
    "other": "#7f7f7f",
}


def _short_label(label: str) -> str:
    """'BCONV2D+ADD+PRELU+AFFINE' -> 'BCONV2D +3': the main op and how many ops fused into it."""
    parts = label.split("+")
    return parts[0] if len(parts) == 1 else f"{parts[0]} +{len(parts) - 1}"


def _family(label: str) -> str:
    main = label.split("+", 1)[0]
    if main in ("BCONV2D", "BCONV2D_GENERAL", "BFC"):
        return "binary conv / FC"
    if main in ("CONV2D", "FC"):
        return "float conv / FC"
    if main == "DWCONV3X3":
        return "depthwise conv"
    return "other"


def _value_bytes(shape: Sequence[int], dtype: str) -> int:
    h, w, c = (int(v) for v in shape)
    if dtype == "bits":
        return h * w * ((c + 63) // 64) * 8
    return h * w * c * (1 if dtype == "i8" else 4)


def _input_dtype(op: Dict[str, Any]) -> str:
    if op["type"] in _BITS_INPUT:
        return "bits"
    if op["type"] in _SAME_TYPE:
        return str(op["output_dtype"])
    return "f32"


def _op_sources(metadata: Dict[str, Any], num_ops: int) -> Optional[List[Dict[str, List[str]]]]:
    """The converter's per-op record, when the file has a well-formed one (it is file data:
    anything else is ignored)."""
    record = metadata.get("op_sources")
    if not isinstance(record, list) or len(record) != num_ops:
        return None
    out = []
    for entry in record:
        if not isinstance(entry, dict):
            return None
        clean = {}
        for key in ("onnx", "modules"):  # either may be left out of a long record
            items = entry.get(key, [])
            if not isinstance(items, list) or not all(isinstance(i, str) for i in items):
                return None
            clean[key] = items
        out.append(clean)
    return out


def build_profile(
    model_name: str,
    timings: Sequence[Tuple[str, float]],
    steps: Sequence[Dict[str, Any]],
    ops: Sequence[Dict[str, Any]],
    metadata: Dict[str, Any],
    runs: int,
    threads: int,
    isa: str,
) -> Profile:
    """A `Profile` from the engine's per-step medians (`_core.Model._profile`), its steps
    (`steps()`: the ops of each), the file's ops (`ops()`) and its metadata."""
    if len(timings) != len(steps):
        raise RuntimeError(f"{len(timings)} step timings for {len(steps)} steps")
    sources = _op_sources(metadata, len(ops))
    total = sum(t for _, t in timings) or 1.0
    out: List[StepProfile] = []
    start = 0.0
    for i, ((label, us), step) in enumerate(zip(timings, steps)):
        members = [int(m) for m in step["ops"]]
        member_ops = [ops[m] for m in members]
        onnx_nodes: List[str] = []
        modules: List[str] = []
        for m, op in zip(members, member_ops):
            # the file's op name is the ONNX node it was emitted from
            names = sources[m]["onnx"] if sources is not None else []
            names = names or ([str(op["name"])] if op["name"] else [])
            onnx_nodes += [n for n in names if n not in onnx_nodes]
            if sources is not None:
                modules += [n for n in sources[m]["modules"] if n not in modules]
        # Bytes: all inputs of the first op; of each later op all inputs but the one the chain
        # hands it; the step's output; the weights of every op.
        moved = 0
        for k, op in enumerate(member_ops):
            external = op["inputs"] if k == 0 else op["inputs"][1:]
            moved += sum(_value_bytes(shape, _input_dtype(op)) for shape in external)
            moved += int(op["bytes"])
        last = member_ops[-1]
        moved += _value_bytes(step["output"], str(last["output_dtype"]))
        out.append(
            StepProfile(
                index=i,
                label=str(label),
                kind=str(step["kind"]),
                ops=members,
                output=tuple(int(v) for v in step["output"]),  # type: ignore[arg-type]
                time_us=float(us),
                start_us=start,
                share=float(us) / total,
                onnx_nodes=onnx_nodes,
                modules=modules,
                bytes_moved=moved,
                float_macs=sum(int(op["flops"]) for op in member_ops),
                binary_macs=sum(int(op["bops"]) for op in member_ops),
            )
        )
        start += float(us)
    return Profile(model_name, out, runs, threads, isa, named=sources is not None)
