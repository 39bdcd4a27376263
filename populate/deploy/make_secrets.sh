#!/usr/bin/env bash
# Random passwords and keys for the compose stack, one file each, in .secrets/stack/ (ignored by
# git; docker-compose.yml mounts them as compose secrets).  Existing files are kept, so running it
# again never changes a password the database already holds.
#
#   populate/deploy/make_secrets.sh [FOLDER]        # default .secrets/stack
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
folder=${1:-$root/.secrets/stack}
mkdir -p "$folder"
chmod 700 "$folder"
for name in db_root_password admin_password worker_password member_password store_secret_key notebook_token; do
  if [[ ! -s "$folder/$name" ]]; then
    (umask 077; python3 -c 'import secrets; print(secrets.token_urlsafe(24))' > "$folder/$name")
    echo "make_secrets: wrote $folder/$name" >&2
  fi
done
if [[ ! -s "$folder/store_access_key" ]]; then
  (umask 077; echo pipeline > "$folder/store_access_key")
  echo "make_secrets: wrote $folder/store_access_key" >&2
fi
