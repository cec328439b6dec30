"""Build the offline GPU kit: the wheels robprune-deploy needs that an offline GPU machine lacks,
plus Fashion-MNIST, packed into checksummed parts of a size you choose.

Run it where pip reaches a package index. The target machine is described by its Python version,
its platform tags and its installed packages: a ``pip list`` or ``pip freeze`` file taken on it
(``--target-list``; without one, the example CUDA image of ``targets/cuda_image.txt``).
The wheels of robprune-deploy and its two plugins are built from this checkout; they and
onnxruntime-gpu are closed over their requirements for that target (``pip download --no-deps`` for
each wheel, in the version installed where this script runs, the tested one, unless ``--unpinned``).
What the target already has is left out, and torch, torchvision, triton and the ``nvidia-*`` CUDA
libraries never travel (the target's CUDA torch is reused).

    python benchmarks/gpu/build_kit.py --target-list box_freeze.txt       # -> .kit/parts/ + .kit/manifest.json
    python benchmarks/gpu/build_kit.py --target-list box.txt --python-version 3.11 --part-size 1G
    python benchmarks/gpu/build_kit.py --target-list minimal             # only torch, torchvision, onnx, onnxscript

The parts are ``kit.tar`` (uncompressed: wheels and .gz files are compressed already) cut into
pieces of at most ``--part-size`` (default 60 MiB; set it to the largest file your way of copying
takes, e.g. ``--part-size 20M`` under a mail gateway's limit, or ``--part-size 4G`` for one part).
``manifest.json`` lists every part and every file in the archive with its size and SHA-256;
``install_kit.sh`` checks them all before installing.
"""

from __future__ import annotations

import argparse
import email.message
import email.parser
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
DEFAULT_TARGET = HERE / "targets" / "cuda_image.txt"
MINIMAL_TARGET = {"torch": "2.11.0", "torchvision": "0.26.0", "onnx": "1.23.1", "onnxscript": "0.7.2"}
# What those four install with them (besides the nvidia-* libraries and triton, never carried).
MINIMAL_TARGET_CLOSURE = (
    "numpy", "pillow", "protobuf", "ml-dtypes", "typing-extensions", "onnx-ir", "packaging", "sympy", "mpmath",
    "networkx", "jinja2", "markupsafe", "fsspec", "filelock", "setuptools",
)  # fmt: skip
PLATFORMS = ("manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64")
# Never carried: the target's CUDA torch stack stays (GBs), and plain onnxruntime would overwrite
# onnxruntime-gpu's module folder.
NEVER = re.compile(r"^(torch|torchvision|torchaudio|triton|onnxruntime|nvidia-.*)$")
MIB = 2**20
DATASET_FILES = (
    "train-images-idx3-ubyte.gz",
    "train-labels-idx1-ubyte.gz",
    "t10k-images-idx3-ubyte.gz",
    "t10k-labels-idx1-ubyte.gz",
)


DEFAULT_PART_SIZE = 60 * MIB
MIN_PART_SIZE = 1024
_UNITS = {"": 1, "k": 2**10, "kib": 2**10, "m": MIB, "mib": MIB, "g": 2**30, "gib": 2**30}
_UNITS |= {"kb": 10**3, "mb": 10**6, "gb": 10**9}


class KitError(Exception):
    """A bad input or a failed pip call, reported as one ``error:`` line."""


def part_size(text: str) -> int:
    """``--part-size``: bytes, or a number with a unit: ``K``/``KiB``, ``M``/``MiB``, ``G``/``GiB``
    (powers of 1024) or ``KB``, ``MB``, ``GB`` (powers of 1000); ``60M``, ``1.5G``, ``100MB``."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([A-Za-z]*)\s*", text)
    unit = match.group(2).lower() if match else None
    if match is None or unit not in _UNITS:
        raise argparse.ArgumentTypeError(f"{text!r}: expected bytes or a size such as 60M, 1G or 100MB")
    size = int(float(match.group(1)) * _UNITS[unit])
    if size < MIN_PART_SIZE:
        raise argparse.ArgumentTypeError(f"{text!r}: at least {MIN_PART_SIZE} bytes")
    return size


def default_dataset() -> Path:
    """Where Fashion-MNIST is looked for: ``$FASHION_MNIST_ROOT``, the shared copy beside the
    checkout, or where Debian's ``dataset-fashion-mnist`` package puts it (the first that exists)."""
    candidates = [Path(os.environ["FASHION_MNIST_ROOT"])] if os.environ.get("FASHION_MNIST_ROOT") else []
    candidates += [REPO.parent / "shared" / "datasets" / "fashion-mnist", Path("/usr/share/datasets/fashion-mnist")]
    return next((c for c in candidates if c.is_dir()), candidates[-1])


def normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(4 * MIB), b""):
            digest.update(block)
    return digest.hexdigest()


def read_target_list(path: Path) -> dict[str, str | None]:
    """Installed packages from ``pip list`` (columns or JSON), ``pip freeze`` or bare names (version unknown)."""
    try:
        text = path.read_text()
    except OSError as exc:
        raise KitError(f"--target-list {path}: cannot be read ({exc.strerror})") from None
    if text.lstrip().startswith("["):
        return {normalize(p["name"]): p.get("version") for p in json.loads(text)}
    packages: dict[str, str | None] = {}
    for raw in text.splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line or line.startswith(("Package ", "---", "-")):
            continue
        if "==" in line:
            name, version = line.split("==", 1)
        elif " @ " in line:
            name, version = line.split(" @ ", 1)[0], None
        else:
            fields = line.split()
            name, version = fields[0], (fields[1] if len(fields) > 1 else None)
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", name.strip()):
            raise KitError(f"--target-list {path}: cannot read line {raw!r}")
        packages[normalize(name.strip())] = version.strip() if version else None
    return packages


@dataclass
class Closure:
    """The wheels to carry: everything the requirements need on the target that the target lacks."""

    chosen: dict[str, str] = field(default_factory=dict)  # name -> version of each carried wheel
    extras: dict[str, set[str]] = field(default_factory=dict)
    metadata: dict[str, email.message.Message] = field(default_factory=dict)
    left_out: dict[str, str] = field(default_factory=dict)  # name -> why it does not travel
    warnings: list[str] = field(default_factory=list)


class Pip:
    """``pip download --no-deps`` for the target (its Python, platforms and marker environment),
    and a closure over the downloaded wheels' own metadata.

    pip's resolver is not used: it would fetch every wheel it considers, the target's CUDA torch
    and its cuDNN included (GBs), and pip evaluates markers and ``Requires-Python`` against the
    interpreter running it, not the target. Here each wheel's ``Requires-Dist`` is read from the
    wheel itself and evaluated for the target; packages the target has are checked against the
    requirements and never downloaded.
    """

    def __init__(self, python_version: str, platforms: list[str], index_args: list[str]) -> None:
        self.python_version = python_version
        self.platforms = platforms
        self.index_args = index_args
        full = python_version if python_version.count(".") == 2 else f"{python_version}.0"
        self.environment = {
            "python_version": ".".join(python_version.split(".")[:2]),
            "python_full_version": full,
            "implementation_name": "cpython",
            "platform_python_implementation": "CPython",
            "sys_platform": "linux",
            "platform_system": "Linux",
            "platform_machine": "x86_64",
            "os_name": "posix",
        }

    def target_args(self) -> list[str]:
        abi = "cp" + "".join(self.python_version.split(".")[:2])
        args = ["--only-binary=:all:", "--python-version", self.python_version, "--implementation", "cp"]
        args += ["--abi", abi, "--abi", "abi3", "--abi", "none"]
        for platform in self.platforms:
            args += ["--platform", platform]
        return args + self.index_args

    def download(self, specs: list[str], folder: Path) -> None:
        """Download ``specs`` (one call; on failure one by one, naming the spec pip could not find)."""
        command = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "-d", str(folder)]
        done = subprocess.run([*command, *self.target_args(), *specs], capture_output=True, text=True)
        if done.returncode == 0:
            return
        for spec in specs:
            one = subprocess.run([*command, *self.target_args(), spec], capture_output=True, text=True)
            if one.returncode != 0:
                lines = [x for x in one.stderr.splitlines() if x.startswith("ERROR")] or one.stderr.splitlines()
                raise KitError(f"pip download {spec}: " + " ".join(lines[-2:]))

    def wanted(self, requirement: str, extras: set[str]) -> Requirement | None:
        req = Requirement(requirement)
        if req.marker is None:
            return req
        contexts = [{**self.environment, "extra": extra} for extra in sorted(extras | {""})]
        return req if any(req.marker.evaluate(c) for c in contexts) else None

    def close(
        self, requirements: list[str], present: dict[str, str | None], pins: dict[str, str], folder: Path
    ) -> Closure:
        """Download the closure of ``requirements`` into ``folder`` (local ``.whl`` paths are taken as they are)."""
        closure = Closure()
        queue: list[tuple[Requirement, str]] = []
        for text in requirements:
            if text.endswith(".whl"):
                self._add_wheel(closure, Path(text), set(), queue)
            elif (req := self.wanted(text, set())) is not None:
                queue.append((req, "requested"))
        while queue:
            pending: dict[str, tuple[SpecifierSet, set[str]]] = {}
            for req, origin in queue:
                name = normalize(req.name)
                if name in present:
                    have = present[name]
                    if have and not req.specifier.contains(have, prereleases=True):
                        closure.warnings.append(f"{origin} requires {req}, the target has {name} {have}")
                    closure.left_out.setdefault(name, "on the target")
                elif NEVER.match(name):
                    closure.left_out[name] = "never carried"
                    closure.warnings.append(
                        f"{origin} requires {req}, which the target lacks and the kit never carries"
                    )
                elif name in closure.chosen:
                    if not req.specifier.contains(closure.chosen[name], prereleases=True):
                        raise KitError(
                            f"{origin} requires {req}, but the kit already has {name} {closure.chosen[name]}"
                        )
                    new = set(req.extras) - closure.extras[name]
                    if new:
                        closure.extras[name] |= new
                        pending.setdefault(name, (SpecifierSet(), set()))  # re-read its metadata for the extras
                else:
                    spec, extras = pending.get(name, (SpecifierSet(), set()))
                    pending[name] = (spec & req.specifier, extras | set(req.extras))
            queue = []
            fresh = {n: v for n, v in pending.items() if n not in closure.chosen}
            specs = []
            for name, (spec, _) in sorted(fresh.items()):
                pin = pins.get(name)
                specs.append(f"{name}=={pin}" if pin and spec.contains(pin, prereleases=True) else f"{name}{spec}")
            if specs:
                before = set(folder.glob("*.whl"))
                self.download(specs, folder)
                for wheel in sorted(set(folder.glob("*.whl")) - before):
                    extras = fresh.get(normalize(wheel.name.split("-")[0]), (None, set()))[1]
                    self._add_wheel(closure, wheel, extras, queue)
            for name in pending.keys() - fresh.keys():  # known wheels with new extras
                self._queue_requirements(closure, name, queue)
        return closure

    def _add_wheel(self, closure: Closure, wheel: Path, extras: set[str], queue: list) -> None:
        with zipfile.ZipFile(wheel) as archive:
            member = next(n for n in archive.namelist() if n.endswith(".dist-info/METADATA"))
            meta = email.parser.Parser().parsestr(archive.read(member).decode())
        name = normalize(meta["Name"])
        closure.chosen[name] = meta["Version"]
        closure.extras[name] = set(extras)
        closure.metadata[name] = meta
        self._queue_requirements(closure, name, queue)

    def _queue_requirements(self, closure: Closure, name: str, queue: list) -> None:
        origin = f"{name} {closure.chosen[name]}"
        for text in closure.metadata[name].get_all("Requires-Dist") or []:
            req = self.wanted(text, closure.extras[name])
            if req is not None:
                queue.append((req, origin))


def tested_versions() -> dict[str, str]:
    """The distributions installed in the environment running this script (where the tests pass)."""
    from importlib import metadata

    found = {normalize(d.metadata["Name"] or ""): d.version for d in metadata.distributions()}
    return {n: v for n, v in found.items() if n and not NEVER.match(n) and n != "robprune-deploy"}


PROJECTS = {".": "robprune_deploy", "plugins/robprune_s2ap": "robprune_s2ap", "plugins/robprune_mrpf": "robprune_mrpf"}
"""The distributions of this checkout (the core and each plugin, with its own pyproject.toml) and the
prefix of each one's wheel file."""


def build_project_wheels(folder: Path, work: Path) -> list[Path]:
    """The wheels of robprune-deploy and its plugins, built from this checkout's tracked files (no
    build isolation: offline-safe)."""
    source = work / "source"
    files = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True, check=True).stdout
    for name in filter(None, files.decode().split("\0")):
        if (REPO / name).is_file():
            (source / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, source / name)
    built = []
    command = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--quiet", "-w", str(folder)]
    for project, prefix in PROJECTS.items():
        done = subprocess.run(
            [*command, "."],
            cwd=source / project,
            capture_output=True,
            text=True,
        )
        if done.returncode != 0:
            raise KitError(f"building the wheel of {project} failed:\n{done.stderr.strip()[-2000:]}")
        built.append(next(folder.glob(f"{prefix}-*.whl")))
    return built


def pack(payload: Path, out: Path, part_size: int) -> dict:
    """``payload/`` as ``kit.tar`` cut into parts; returns the manifest."""
    archive = out / "kit.tar"
    files = sorted(p for p in payload.rglob("*") if p.is_file())
    with tarfile.open(archive, "w", format=tarfile.PAX_FORMAT) as tar:
        for path in files:
            tar.add(path, arcname=path.relative_to(payload).as_posix(), recursive=False)
    parts_dir = out / "parts"
    parts_dir.mkdir()
    size = archive.stat().st_size
    count = max(1, -(-size // part_size))
    width = max(2, len(str(count - 1)))
    parts = []
    with archive.open("rb") as source:
        for index in range(count):
            part = parts_dir / f"kit.part{index:0{width}d}"
            with part.open("wb") as sink:
                remaining = part_size
                while remaining and (block := source.read(min(remaining, 4 * MIB))):
                    sink.write(block)
                    remaining -= len(block)
            parts.append({"name": part.name, "size": part.stat().st_size, "sha256": sha256(part)})
    manifest = {
        "format": 1,
        "archive": {"name": archive.name, "size": size, "sha256": sha256(archive)},
        "parts": parts,
        "files": [
            {"path": p.relative_to(payload).as_posix(), "size": p.stat().st_size, "sha256": sha256(p)} for p in files
        ],
    }
    archive.unlink()
    return manifest


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO / ".kit", help="kit folder (replaced; default .kit/)")
    parser.add_argument("--python-version", default="3.12", help="the target's Python (default 3.12)")
    parser.add_argument(
        "--platform", dest="platforms", action="append", help=f"wheel platform tags ({PLATFORMS[0]}...)"
    )
    parser.add_argument(
        "--target-list",
        default=str(DEFAULT_TARGET),
        help="the target's `pip list`/`pip freeze` file, or 'minimal' (torch, torchvision, onnx, onnxscript)",
    )
    parser.add_argument("--requirement", dest="requirements", action="append", default=[], help="extra requirement")
    parser.add_argument("--no-project", action="store_true", help="leave out robprune-deploy and its dependencies")
    parser.add_argument(
        "--unpinned", action="store_true", help="let pip pick the newest versions instead of the ones installed here"
    )
    parser.add_argument(
        "--dataset",
        type=Path,
        default=default_dataset(),
        help="folder of the four Fashion-MNIST .gz files (default: $FASHION_MNIST_ROOT, ../shared/datasets/"
        "fashion-mnist or /usr/share/datasets/fashion-mnist)",
    )
    parser.add_argument("--no-dataset", action="store_true", help="carry no Fashion-MNIST files")
    parser.add_argument(
        "--part-size",
        type=part_size,
        default=DEFAULT_PART_SIZE,
        help="largest part: bytes, or e.g. 60M, 1G, 100MB (default 60M; a size above the kit's gives one part)",
    )
    parser.add_argument("--find-links", type=Path, help="resolve and download from this folder of wheels")
    parser.add_argument("--no-index", action="store_true", help="do not use the package index (with --find-links)")
    args = parser.parse_args(argv)
    try:
        manifest = build(args)
    except KitError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    total = sum(p["size"] for p in manifest["parts"])
    print(
        f"kit: {len(manifest['parts'])} part(s), {total / MIB:.1f} MiB in all "
        f"({len(manifest['wheels'])} wheels, {len(manifest['datasets'])} dataset files) in {args.out}"
    )
    for wheel in sorted(manifest["files"], key=lambda f: -f["size"])[:5]:
        print(f"  {wheel['size'] / MIB:7.1f} MiB  {wheel['path']}")
    return 0


def build(args: argparse.Namespace) -> dict:
    if args.part_size < MIN_PART_SIZE:  # the command line checks this too; build() may be called directly
        raise KitError(f"--part-size {args.part_size}: at least {MIN_PART_SIZE} bytes")
    index_args = (["--find-links", str(args.find_links.resolve())] if args.find_links else []) + (
        ["--no-index"] if args.no_index else []
    )
    pip = Pip(args.python_version, args.platforms or list(PLATFORMS), index_args)
    started = time.time()
    work = Path(tempfile.mkdtemp(prefix="robprune-kit-"))
    try:
        payload = work / "payload"
        wheels = payload / "wheels"
        wheels.mkdir(parents=True)
        if args.target_list == "minimal":
            present: dict[str, str | None] = dict.fromkeys(MINIMAL_TARGET_CLOSURE) | MINIMAL_TARGET
        else:
            present = read_target_list(Path(args.target_list))
        requirements = list(args.requirements)
        pins = {n: v for n, v in present.items() if v}
        if not args.no_project:
            requirements += [*map(str, build_project_wheels(wheels, work)), "onnxruntime-gpu"]
            if not args.unpinned:  # the versions this checkout is tested with, where the target has none
                pins = tested_versions() | pins
        closure = pip.close(requirements, present, pins, wheels)
        for line in closure.warnings:
            print(f"warning: {line}", file=sys.stderr)
        datasets = [] if args.no_dataset else copy_dataset(args.dataset, payload / "datasets" / "fashion-mnist")
        out = args.out.resolve()
        staging = out.with_name(out.name + ".partial")
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
        manifest = pack(payload, staging, args.part_size)
        manifest.update(
            python_version=args.python_version,
            platforms=pip.platforms,
            target_list=str(args.target_list),
            wheels=sorted(p.name for p in wheels.glob("*.whl")),
            carried={n: closure.chosen[n] for n in sorted(closure.chosen)},
            left_out=closure.left_out,
            warnings=closure.warnings,
            datasets=datasets,
            built_seconds=round(time.time() - started, 1),
        )
        (staging / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
        shutil.rmtree(out, ignore_errors=True)
        staging.rename(out)  # a kit folder is whole or absent
        return manifest
    finally:
        shutil.rmtree(work, ignore_errors=True)


def copy_dataset(source: Path, folder: Path) -> list[str]:
    missing = [name for name in DATASET_FILES if not (source / name).is_file()]
    if missing:
        raise KitError(f"--dataset {source}: missing {', '.join(missing)} (or pass --no-dataset)")
    folder.mkdir(parents=True)
    for name in DATASET_FILES:
        shutil.copy2(source / name, folder / name)
    return [f"datasets/fashion-mnist/{name}" for name in DATASET_FILES]


if __name__ == "__main__":
    raise SystemExit(main())
