#!/usr/bin/env bash
# Install the offline GPU kit made by build_kit.py, on the machine without network.
#
#   bash benchmarks/gpu/install_kit.sh KIT_DIR TARGET_DIR [--no-doctor]
#
# KIT_DIR holds manifest.json and the parts kit.partNN (copied there in one go, or collected one
# at a time with stage_part.sh). Every part, the reassembled kit.tar and every file in it are
# checked against the manifest's SHA-256 before anything is installed; a mismatch stops with
# "error: ..." and exit 2.
#
# Where it installs: `pip install --no-index --no-deps --target TARGET_DIR`, used through
# PYTHONPATH=TARGET_DIR (source TARGET_DIR/env.sh). Why not a venv with --system-site-packages:
# where python3 is itself a venv (as in CUDA images that ship torch in one, e.g. /opt/torch/.venv),
# a venv made from it sees the *base* interpreter's packages, not that venv's torch. PYTHONPATH
# entries come before site-packages, so the kit's onnxruntime-gpu `onnxruntime/` folder is the one
# imported, and a CPU-only `onnxruntime` on the machine stays untouched behind it (the two builds
# share that folder name; installing one over the other in one folder would mix their files). The kit was computed
# against the machine's package list, so --no-deps is exact; `pip check` then verifies it.
set -euo pipefail

usage() { echo "usage: $0 KIT_DIR TARGET_DIR [--no-doctor]" >&2; exit 2; }
[ $# -ge 2 ] || usage
KIT=$(cd "$1" && pwd) || { echo "error: kit folder $1 does not exist" >&2; exit 2; }
TARGET=$2
DOCTOR=1
[ "${3:-}" = "--no-doctor" ] && DOCTOR=0
PYTHON=${PYTHON:-python3}
[ -f "$KIT/manifest.json" ] || { echo "error: $KIT/manifest.json: no such file" >&2; exit 2; }

echo "== checking parts"
"$PYTHON" - "$KIT" <<'EOF'
import hashlib, json, sys
from pathlib import Path
kit = Path(sys.argv[1])
manifest = json.loads((kit / "manifest.json").read_text())
def digest(path):
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()
bad = []
for part in manifest["parts"]:
    path = kit / part["name"]
    if not path.is_file():
        bad.append(f"{part['name']}: missing")
    elif path.stat().st_size != part["size"] or digest(path) != part["sha256"]:
        bad.append(f"{part['name']}: checksum mismatch (corrupted or partial copy)")
if bad:
    sys.exit("error: " + "; ".join(bad))
print(f"{len(manifest['parts'])} parts ok")
EOF

echo "== reassembling"
WORK=$(mktemp -d "${TMPDIR:-/tmp}/robprune-kit.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
"$PYTHON" - "$KIT" "$WORK" <<'EOF'
import hashlib, json, sys, tarfile
from pathlib import Path
kit, work = Path(sys.argv[1]), Path(sys.argv[2])
manifest = json.loads((kit / "manifest.json").read_text())
archive = work / manifest["archive"]["name"]
h = hashlib.sha256()
with archive.open("wb") as sink:
    for part in manifest["parts"]:
        data = (kit / part["name"]).read_bytes()
        h.update(data)
        sink.write(data)
if h.hexdigest() != manifest["archive"]["sha256"]:
    sys.exit(f"error: reassembled {archive.name}: checksum mismatch")
payload = work / "payload"
with tarfile.open(archive) as tar:
    for member in tar.getmembers():
        if not member.isfile() or member.name.startswith("/") or ".." in Path(member.name).parts:
            sys.exit(f"error: {archive.name}: unexpected member {member.name!r}")
    try:
        tar.extractall(payload, filter="data")
    except TypeError:  # Python without extraction filters; members were checked above
        tar.extractall(payload)
archive.unlink()
for entry in manifest["files"]:
    path = payload / entry["path"]
    if not path.is_file() or hashlib.sha256(path.read_bytes()).hexdigest() != entry["sha256"]:
        sys.exit(f"error: {entry['path']}: checksum mismatch after reassembly")
print(f"{len(manifest['files'])} files ok")
EOF

echo "== installing into $TARGET"
mkdir -p "$TARGET"
TARGET=$(cd "$TARGET" && pwd)
shopt -s nullglob
WHEELS=("$WORK"/payload/wheels/*.whl)
if [ ${#WHEELS[@]} -gt 0 ]; then
    "$PYTHON" -m pip install --quiet --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --disable-pip-version-check --target "$TARGET" "${WHEELS[@]}"
fi
# A plain onnxruntime that reached the target would share onnxruntime/ with onnxruntime-gpu:
# remove both and reinstall the GPU build alone, so its files win.
if compgen -G "$TARGET/onnxruntime-*.dist-info" >/dev/null; then
    echo "removing plain onnxruntime from $TARGET (it shares onnxruntime/ with onnxruntime-gpu)"
    rm -rf "$TARGET"/onnxruntime "$TARGET"/onnxruntime-*.dist-info
    GPU=("$WORK"/payload/wheels/onnxruntime_gpu-*.whl)
    [ ${#GPU[@]} -gt 0 ] && "$PYTHON" -m pip install --quiet --no-index --no-deps --no-compile --upgrade \
        --force-reinstall --disable-pip-version-check --target "$TARGET" "${GPU[@]}"
fi
if [ -d "$WORK/payload/datasets" ]; then
    mkdir -p "$TARGET/datasets"
    cp -r "$WORK"/payload/datasets/* "$TARGET/datasets/"
fi
cat >"$TARGET/env.sh" <<EOF
# source this file: the kit's packages before the machine's own
export PYTHONPATH="$TARGET\${PYTHONPATH:+:\$PYTHONPATH}"
export PATH="$TARGET/bin:\$PATH"
export ROBPRUNE_KIT_DATASETS="$TARGET/datasets"
EOF
export PYTHONPATH="$TARGET${PYTHONPATH:+:$PYTHONPATH}"

echo "== verifying"
KIT_NAMES=$("$PYTHON" -c "import json,sys; print(' '.join(json.load(open(sys.argv[1])).get('carried', {})))" "$KIT/manifest.json")
if [[ " $KIT_NAMES " == *" onnxruntime-gpu "* ]]; then
    "$PYTHON" - "$TARGET" <<'EOF'
import sys
from pathlib import Path
target = Path(sys.argv[1]).resolve()
try:
    import onnxruntime
    from onnxruntime.capi import build_and_package_info as info
except ImportError as exc:
    sys.exit(f"error: onnxruntime does not import: {exc}")
where = Path(onnxruntime.__file__).resolve()
if info.package_name != "onnxruntime-gpu" or target not in where.parents:
    sys.exit(f"error: `import onnxruntime` loads {info.package_name} from {where}, not the kit's onnxruntime-gpu")
print(f"onnxruntime: {info.package_name} {onnxruntime.__version__} from {where.parent}")
EOF
fi
# pip check covers the kit and the machine's packages together. A missing requirement of a kit
# package breaks it; a version cap (e.g. nncf's numpy<2.5 against the machine's numpy) is reported.
CHECK=$("$PYTHON" -m pip check --disable-pip-version-check 2>&1 || true)
MISSING=""
while IFS= read -r line; do
    [ -z "$line" ] && continue
    owner=$(echo "$line" | awk '{print tolower($1)}' | tr '_.' '--')
    if [[ " $KIT_NAMES " == *" $owner "* ]]; then
        echo "pip check: $line"
        [[ "$line" == *"which is not installed"* ]] && MISSING="$MISSING\n  $line"
    fi
done <<<"$CHECK"
if [ -n "$MISSING" ]; then
    echo -e "error: kit packages miss requirements:$MISSING" >&2
    exit 2
fi
echo "installed into $TARGET; use it with: source $TARGET/env.sh"
if [ "$DOCTOR" = 1 ]; then
    "$PYTHON" -m robprune_deploy.cli.main doctor --set evaluate.providers=[cuda] --set device=cuda \
        --tracking-uri "sqlite:///$TARGET/doctor-mlflow.db" || echo "(doctor: not usable as above)"
fi
