"""Checks a built qbinfer wheel, and the JSON of `qbinfer demo --json` run from its install.

    python scripts/check_wheel.py WHEEL [--platform linux_aarch64] [--ext-suffix .cpython-...so]
    python scripts/check_wheel.py --demo-json OUT.json --site-packages DIR

The wheel: its name's tags equal WHEEL's Tag line (cp311-cp311-PLATFORM), Root-Is-Purelib is
false, METADATA names this checkout's version and the numpy requirement, entry_points.txt has the
`qbinfer` console script, RECORD lists every file once with a sha256 and size that match (itself
without), qbinfer._core is there (with the target's extension suffix) and is an ELF file for the
platform's machine, as is the qbinfer-bench in the data scripts; every file of
python/qbinfer/models and every module of python/qbinfer is there; nothing test-only
(qbinfer._testing and its stub, tests/, byte code).

The demo: the accuracy equals the one in the shipped model's record, on its 450 images, with
the model file from the installed package (under --site-packages), batch and single runs equal.

Exit status 0 when everything holds; otherwise each failure on one line and status 1.
Needs the standard library only (the scripts run it with the host Python).
"""

from __future__ import annotations

import argparse
import base64
import csv
import hashlib
import io
import json
import os
import sys
import zipfile
from email.parser import Parser
from typing import Dict, List

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGE_SRC = os.path.join(REPO, "python", "qbinfer")
RECORD_JSON = os.path.join(PACKAGE_SRC, "models", "digits_qbnet.json")

# ELF e_machine values (the System V ABI's table).
ELF_MACHINES = {"x86_64": 62, "aarch64": 183, "armv7l": 40}
# Source files that are for tests only and must stay out of a wheel.
TEST_ONLY = {"_testing.pyi"}


def project_version() -> str:
    with open(os.path.join(REPO, "pyproject.toml")) as f:
        for line in f:
            if line.startswith("version = "):
                return line.split('"')[1]
    raise SystemExit("no version line in pyproject.toml")


def elf_machine(data: bytes) -> int:
    if data[:4] != b"\x7fELF":
        return -1
    byteorder = "little" if data[5] == 1 else "big"
    return int.from_bytes(data[18:20], byteorder)


def expected_package_files() -> List[str]:
    """Every file of python/qbinfer a wheel must carry, as wheel paths (qbinfer/...)."""
    out = []
    for folder, dirs, files in os.walk(PACKAGE_SRC):
        dirs[:] = [d for d in dirs if d != "__pycache__"]
        for name in files:
            if name in TEST_ONLY or name.endswith((".pyc", ".so", ".pyd")):
                continue
            rel = os.path.relpath(os.path.join(folder, name), os.path.dirname(PACKAGE_SRC))
            out.append(rel.replace(os.sep, "/"))
    return sorted(out)


def check_wheel(path: str, platform: str, ext_suffix: str) -> List[str]:
    errors: List[str] = []
    version = project_version()
    name = os.path.basename(path)
    parts = name[: -len(".whl")].split("-")
    if len(parts) != 5 or parts[:2] != ["qbinfer", version]:
        return [f"{name}: not qbinfer-{version}-PY-ABI-PLATFORM.whl"]
    tag = "-".join(parts[2:])
    if platform and parts[4] != platform:
        errors.append(f"{name}: platform tag {parts[4]}, want {platform}")
    dist_info = f"qbinfer-{version}.dist-info"
    with zipfile.ZipFile(path) as z:
        names = z.namelist()
        files: Dict[str, bytes] = {n: z.read(n) for n in names if not n.endswith("/")}
    if len(set(names)) != len(names):
        errors.append("the archive lists a file twice")

    def text(member: str) -> str:
        if member not in files:
            errors.append(f"no {member}")
            return ""
        return files[member].decode()

    wheel = Parser().parsestr(text(f"{dist_info}/WHEEL"))
    if wheel.get_all("Tag") != [tag]:
        errors.append(f"WHEEL Tag {wheel.get_all('Tag')}, the file name says {tag}")
    if wheel.get("Root-Is-Purelib", "").lower() != "false":
        errors.append("WHEEL: Root-Is-Purelib is not false (the wheel has an extension)")
    if not wheel.get("Wheel-Version", "").startswith("1."):
        errors.append(f"WHEEL: Wheel-Version {wheel.get('Wheel-Version')!r}")

    meta = Parser().parsestr(text(f"{dist_info}/METADATA"))
    if meta.get("Name") != "qbinfer" or meta.get("Version") != version:
        errors.append(f"METADATA: {meta.get('Name')} {meta.get('Version')}, want qbinfer {version}")
    requires = [r.replace(" ", "") for r in meta.get_all("Requires-Dist") or []]
    if "numpy>=1.23" not in requires:
        errors.append(f"METADATA: no numpy>=1.23 among Requires-Dist {requires}")

    entry_points = text(f"{dist_info}/entry_points.txt")
    scripts = entry_points.split("[console_scripts]", 1)[-1].split("[", 1)[0]
    if "qbinfer = qbinfer.__main__:main" not in [s.strip() for s in scripts.splitlines()]:
        errors.append("entry_points.txt: no console script qbinfer = qbinfer.__main__:main")

    # RECORD: path,sha256=<urlsafe b64, no padding>,size for every file but itself.
    record_name = f"{dist_info}/RECORD"
    listed: Dict[str, List[str]] = {}
    for row in csv.reader(io.StringIO(text(record_name))):
        if not row:
            continue
        if row[0] in listed:
            errors.append(f"RECORD lists {row[0]} twice")
        listed[row[0]] = row[1:]
    for member, data in files.items():
        row = listed.pop(member, None)
        if row is None:
            errors.append(f"RECORD does not list {member}")
        elif member == record_name:
            if row != ["", ""]:
                errors.append(f"RECORD's own row has a hash or size: {row}")
        else:
            digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
            if row != [f"sha256={digest}", str(len(data))]:
                errors.append(f"RECORD row of {member} {row} does not match the file")
    for member in listed:
        errors.append(f"RECORD lists {member}, which the wheel does not have")

    for want in expected_package_files():
        if want not in files:
            errors.append(f"missing {want} (python/qbinfer has it)")
    machine = ELF_MACHINES.get(platform.split("_", 1)[-1]) if platform else None
    core = [n for n in files if n.startswith("qbinfer/_core.") and n.endswith((".so", ".pyd"))]
    if ext_suffix and core != [f"qbinfer/_core{ext_suffix}"]:
        errors.append(f"extension {core}, want qbinfer/_core{ext_suffix}")
    elif not core:
        errors.append("no qbinfer/_core extension")
    bench = f"qbinfer-{version}.data/scripts/qbinfer-bench"
    if bench not in files:
        errors.append(f"no {bench}")
    for member in core + [bench]:
        if machine is not None and member in files and elf_machine(files[member]) != machine:
            errors.append(f"{member}: ELF machine {elf_machine(files[member])}, want {machine}")

    for member in files:
        base = member.rsplit("/", 1)[-1]
        if (
            base.startswith("_testing")
            or member.startswith("tests/")
            or "__pycache__" in member
            or member.endswith(".pyc")
        ):
            errors.append(f"test-only or generated file in the wheel: {member}")
    return errors


def check_demo(json_path: str, site_packages: str) -> List[str]:
    with open(json_path) as f:
        lines = f.read().strip().splitlines()
    if not lines:
        return [f"{json_path} is empty"]
    demo = json.loads(lines[-1])
    with open(RECORD_JSON) as f:
        record = json.load(f)
    errors = []
    qbw = os.path.realpath(demo.get("qbw", ""))
    if not qbw.startswith(os.path.realpath(site_packages) + os.sep):
        errors.append(f"the demo ran {demo.get('qbw')}, not the installed package's model")
    if demo.get("images") != 450:
        errors.append(f"the demo ran {demo.get('images')} images, not the 450 held-out ones")
    if demo.get("batch_matches_single") is not True:
        errors.append("one batch gave other classes than single images")
    want = record["accuracy_engine"]
    got = demo.get("accuracy_engine")
    if not isinstance(got, (int, float)) or abs(got - want) > 1e-9:
        errors.append(f"accuracy {got}%, the shipped model's record says {want}%")
    else:
        print(f"qbinfer demo: {got:.2f}% on {demo['images']} images = the record's {want:.2f}%")
    return errors


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("wheel", nargs="?")
    parser.add_argument("--platform", default="", help="the wanted platform tag, e.g. linux_armv7l")
    parser.add_argument("--ext-suffix", default="", help="the target Python's EXT_SUFFIX")
    parser.add_argument("--demo-json", help="the output of `qbinfer demo --json`")
    parser.add_argument("--site-packages", help="where the wheel was installed (with --demo-json)")
    args = parser.parse_args()
    if bool(args.wheel) == bool(args.demo_json):
        parser.error("give a WHEEL or --demo-json (one of them)")
    if args.demo_json:
        if not args.site_packages:
            parser.error("--demo-json needs --site-packages")
        errors = check_demo(args.demo_json, args.site_packages)
    else:
        errors = check_wheel(args.wheel, args.platform, args.ext_suffix)
        if not errors:
            with zipfile.ZipFile(args.wheel) as z:
                print(f"{os.path.basename(args.wheel)}: {len(z.namelist())} files, tags, RECORD OK")
    for e in errors:
        print(f"check_wheel: {e}", file=sys.stderr)
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
