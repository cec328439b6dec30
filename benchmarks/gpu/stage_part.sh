#!/usr/bin/env bash
# On the GPU machine: collect kit files as they arrive. Copies each file given (manifest.json,
# kit.partNN) into the staging folder, checks every staged part against the manifest at once, and
# says which parts are staged and which are still missing. Run it after each copy, in any order;
# once nothing is missing, install from the staging folder (install_kit.sh, or install_and_check.sh).
#
#   bash benchmarks/gpu/stage_part.sh /media/usb/manifest.json /media/usb/kit.part00 /media/usb/kit.part01
#   STAGE=/data/robprune-kit bash benchmarks/gpu/stage_part.sh kit.part02     # another staging folder
set -euo pipefail
STAGE=${STAGE:-/var/tmp/robprune-kit}
mkdir -p "$STAGE"
for file in "$@"; do
    [ -f "$file" ] || { echo "error: $file: no such file" >&2; exit 2; }
    target="$STAGE/$(basename "$file")"
    if [ ! "$file" -ef "$target" ]; then   # staging a staged file again only checks it
        cp -f "$file" "$target.partial" && mv -f "$target.partial" "$target"
    fi
done
python3 - "$STAGE" <<'PY'
import hashlib, json, sys
from pathlib import Path
stage = Path(sys.argv[1])
if not (stage / "manifest.json").is_file():
    sys.exit(f"error: no manifest.json in {stage} yet: stage the kit's manifest.json with (or before) its parts")
parts = json.loads((stage / "manifest.json").read_text())["parts"]
staged, missing = [], []
for part in parts:
    path = stage / part["name"]
    if not path.is_file():
        missing.append(part["name"])
        continue
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 22), b""):
            digest.update(block)
    if digest.hexdigest() != part["sha256"]:
        path.unlink()  # a damaged copy never reaches the install
        sys.exit(f"error: {part['name']}: checksum mismatch, removed from {stage}; copy it again")
    staged.append(part["name"])
print(f"staged {len(staged)}/{len(parts)} parts in {stage}: {' '.join(staged)}")
print("missing: " + (" ".join(missing) or "none"))
PY
