#!/usr/bin/env bash
# The last device call: stage the kit files it carried, install the kit, run the GPU check.
# gpu_check.json, gpu_check.md, doctor.txt and install.log come back in $OUT, also when the
# check is cut short (its results are written after every step).
#
#   bash benchmarks/gpu/install_and_check.sh .kit/parts/kit.part05
set -uo pipefail
SCRATCH=${SCRATCH:-/var/tmp/robprune-kit}
SITE=${SITE:-/var/tmp/robprune-site}
RESULTS=${OUT:-/tmp/gpu_check_out}
mkdir -p "$RESULTS"
bash "$(dirname "$0")/stage_part.sh" "$@" || exit 2
bash "$(dirname "$0")/install_kit.sh" "$SCRATCH" "$SITE" --no-doctor >"$RESULTS/install.log" 2>&1
status=$?
tail -5 "$RESULTS/install.log"
[ $status -eq 0 ] || { echo "error: install_kit.sh failed (install.log)"; exit 1; }
# shellcheck disable=SC1091
source "$SITE/env.sh"
python3 -m robprune_deploy.cli.main doctor --set device=cuda --set 'evaluate.providers=[cuda]' \
    --tracking-uri "sqlite:///$SITE/doctor.db" >"$RESULTS/doctor.txt" 2>&1
echo "doctor exit $? (doctor.txt)"
PYTHONUNBUFFERED=1 timeout "${CHECK_SECONDS:-450}" python3 "$(dirname "$0")/gpu_check.py" \
    --out /var/tmp/gpu_check --budget "${BUDGET:-400}" --data-root "$SITE/datasets/fashion-mnist" ${CHECK_ARGS:-}
echo "gpu_check exit $?"
cp /var/tmp/gpu_check/gpu_check.json /var/tmp/gpu_check/gpu_check.md "$RESULTS/" 2>/dev/null
