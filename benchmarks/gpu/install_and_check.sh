#!/usr/bin/env bash
# On the GPU machine, in a checkout of this repository: stage the kit files given (if any), install
# the staged kit, run `robprune doctor` and the GPU check. gpu_check.json, gpu_check.md, doctor.txt
# and install.log are written to $RESULTS, also when the check is cut short (its results are
# written after every step).
#
#   bash benchmarks/gpu/install_and_check.sh                          # the parts are staged already
#   RESULTS=/tmp/gpu-check bash benchmarks/gpu/install_and_check.sh /media/usb/kit.part05
#
# Settings (environment): STAGE (staging folder, /var/tmp/robprune-kit), SITE (install folder,
# /var/tmp/robprune-site), RESULTS (./gpu_check_results), BUDGET (seconds for the check's steps,
# 460), CHECK_ARGS (more gpu_check.py arguments).
set -uo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
export STAGE=${STAGE:-/var/tmp/robprune-kit}
SITE=${SITE:-/var/tmp/robprune-site}
RESULTS=${RESULTS:-$PWD/gpu_check_results}
BUDGET=${BUDGET:-460}
mkdir -p "$RESULTS"
bash "$HERE/stage_part.sh" "$@" || exit 2
bash "$HERE/install_kit.sh" "$STAGE" "$SITE" --no-doctor >"$RESULTS/install.log" 2>&1
status=$?
tail -5 "$RESULTS/install.log"
[ $status -eq 0 ] || { echo "error: install_kit.sh failed (see $RESULTS/install.log)"; exit 1; }
# shellcheck disable=SC1091
source "$SITE/env.sh"
python3 -m robprune_deploy.cli.main doctor --set device=cuda --set 'evaluate.providers=[cuda]' \
    --tracking-uri "sqlite:///$SITE/doctor.db" >"$RESULTS/doctor.txt" 2>&1
echo "doctor exit $? ($RESULTS/doctor.txt)"
# A hard stop a minute after the check's own budget, in case a step hangs beyond its time box.
# shellcheck disable=SC2086
PYTHONUNBUFFERED=1 timeout "$((BUDGET + 60))" python3 "$HERE/gpu_check.py" --out "$RESULTS" --budget "$BUDGET" \
    --data-root "$SITE/datasets/fashion-mnist" ${CHECK_ARGS:-}
echo "gpu_check exit $? ($RESULTS/gpu_check.md)"
