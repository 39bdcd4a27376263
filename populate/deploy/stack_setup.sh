#!/bin/sh
# The compose stack's one-shot set-up (the `setup` service of docker-compose.yml).
#
# 1. as root: the prefix's roles (python -m populate roles create) and one login per kind of service,
#    each with the password of its compose secret;
# 2. as the admin login: every schema, table and job queue (python -m populate setup);
# 3. as root again: `roles create` once more, because MySQL grants the worker role per computed
#    table, and those tables exist only after step 2.
#
# Passwords are read from /run/secrets/ (SECRETS_DIR) and handed to each command in its own
# environment only.
set -eu

secret() { cat "${SECRETS_DIR:-/run/secrets}/$1"; }
as_root() { DJ_USER="${DB_ROOT_USER:-root}" DJ_PASS="$(secret db_root_password)" "$@"; }

as_root python -m populate roles create
for pair in "admin:$DB_ADMIN_USER" "worker:$DB_WORKER_USER" "member:$DB_MEMBER_USER"; do
  role=${pair%%:*}
  user=${pair#*:}
  LOGIN_PASSWORD="$(secret "${role}_password")" as_root \
    python -m populate roles user "$user" --role "$role" --password-env LOGIN_PASSWORD --host "${DB_LOGIN_HOST:-%}"
done

DJ_USER="$DB_ADMIN_USER" DJ_PASS="$(secret admin_password)" DJ_CREATE_TABLES=true python -m populate setup

as_root python -m populate roles create
echo "stack_setup: roles, logins ($DB_ADMIN_USER, $DB_WORKER_USER, $DB_MEMBER_USER) and tables are in place"
