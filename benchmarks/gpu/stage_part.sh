#!/usr/bin/env bash
# On the GPU machine: move kit files that this device call carried out of the work tree into the
# scratch folder (where later calls' work-tree syncs cannot touch them), check each part against
# the manifest at once, and list what is staged so far.
#
#   bash benchmarks/gpu/stage_part.sh .kit/manifest.json .kit/parts/kit.part00
set -euo pipefail
SCRATCH=${SCRATCH:-/var/tmp/robprune-kit}
mkdir -p "$SCRATCH"
for file in "$@"; do
    [ -f "$file" ] || { echo "error: $file did not travel with this call (name it in carry)" >&2; exit 2; }
    mv -f "$file" "$SCRATCH/"
done
python3 - "$SCRATCH" <<'EOF'
import hashlib, json, sys
from pathlib import Path
scratch = Path(sys.argv[1])
if not (scratch / "manifest.json").is_file():
    sys.exit("error: no manifest.json staged yet: carry .kit/manifest.json with the first part")
parts = json.loads((scratch / "manifest.json").read_text())["parts"]
staged, missing = [], []
for part in parts:
    path = scratch / part["name"]
    if not path.is_file():
        missing.append(part["name"])
    elif hashlib.sha256(path.read_bytes()).hexdigest() != part["sha256"]:
        sys.exit(f"error: {part['name']}: checksum mismatch; carry it again")
    else:
        staged.append(part["name"])
print(f"staged {len(staged)}/{len(parts)} parts in {scratch}: {' '.join(staged)}")
print("missing: " + (" ".join(missing) or "none"))
EOF
