#!/usr/bin/env bash
# Submit populate/deploy/slurm_worker.sbatch after creating the folder of its --output log: SLURM
# opens the log before the job script runs and does not create folders.  An --output (-o) given here
# wins over the script's, and its folder is the one created.  An empty --gres= (no GPU, as the sbatch
# file's CPU example) is passed as --gres=none: SLURM 22.05 (Debian 12) rejects the empty value with
# "Invalid Trackable RESource (TRES) specification" instead of clearing the script's gpu:1.
#
#   populate/deploy/slurm_submit.sh --array=0-15 [other sbatch options]
set -euo pipefail
script=$(cd "$(dirname "$0")" && pwd)/slurm_worker.sbatch
output=$(sed -n 's/^#SBATCH --output=//p' "$script" | head -1)
args=("$@")
for i in "${!args[@]}"; do
  case ${args[i]} in
    --output=*) output=${args[i]#--output=} ;;
    -o|--output) output=${args[i + 1]:-} ;;
    -o?*) output=${args[i]#-o} ;;
    --gres=) args[i]=--gres=none ;;
  esac
done
mkdir -p "$(dirname "${output:-logs/x}")"
exec sbatch "${args[@]}" "$script"
