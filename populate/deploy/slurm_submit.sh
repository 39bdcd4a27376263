#!/usr/bin/env bash
# Submit populate/deploy/slurm_worker.sbatch after creating the folder of its --output log: SLURM
# opens the log before the job script runs and does not create folders.
#
#   populate/deploy/slurm_submit.sh --array=0-15 [other sbatch options]
set -euo pipefail
script=$(cd "$(dirname "$0")" && pwd)/slurm_worker.sbatch
output=$(sed -n 's/^#SBATCH --output=//p' "$script" | head -1)
mkdir -p "$(dirname "${output:-logs/x}")"
exec sbatch "$@" "$script"
