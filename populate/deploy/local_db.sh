#!/usr/bin/env bash
# Start (or reuse) a private database server whose data lives in the ignored folder .local/<backend>,
# and print the DataJoint settings for it as shell `export` lines:
#
#   eval "$(populate/deploy/local_db.sh postgresql)"
#   eval "$(populate/deploy/local_db.sh mariadb)"
#   populate/deploy/local_db.sh stop [postgresql|mariadb]
#
# The server package is installed with apt-get when its programs are missing. Messages go to stderr,
# so that only the exports reach stdout. Servers listen on 127.0.0.1 only; logins need the password
# generated on first use into .local/password (mode 600, ignored by git), which the exports carry.
# Ports: PIPELINE_PG_PORT (55432), PIPELINE_MARIADB_PORT (53306).
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
local_dir="$root/.local"
say() { echo "local_db: $*" >&2; }

password() {  # the checkout's generated database password, created on first use
  local file="$local_dir/password"
  if [[ ! -s "$file" ]]; then
    mkdir -p "$local_dir"
    ( umask 077; head -c 18 /dev/urandom | base64 | tr -d '/+=\n' > "$file" )
  fi
  cat "$file"
}

install_if_missing() {  # program package
  if ! command -v "$1" >/dev/null 2>&1 && ! ls /usr/lib/postgresql/*/bin/"$1" >/dev/null 2>&1; then
    say "$1 not found; installing Debian package $2"
    if [[ $(id -u) -ne 0 ]]; then SUDO=sudo; else SUDO=; fi
    $SUDO apt-get update -qq >&2 && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "$2" >&2
  fi
}

start_postgresql() {
  local port=${PIPELINE_PG_PORT:-55432} data="$local_dir/postgresql" bin
  install_if_missing initdb postgresql
  bin=$(dirname "$(ls -d /usr/lib/postgresql/*/bin/initdb 2>/dev/null | sort -V | tail -1 || command -v initdb)")
  # PostgreSQL refuses to run as root: as root, run it as the `postgres` system user.
  local as=()
  if [[ $(id -u) -eq 0 ]]; then
    as=(runuser -u postgres --)
    # The postgres user may not reach a checkout under /root: keep the data where it can, linked here.
    if [[ ! -e "$data" ]] && ! runuser -u postgres -- test -x "$local_dir/.." 2>/dev/null; then
      local elsewhere="/var/tmp/pipeline-postgresql-$(echo "$root" | md5sum | cut -c1-8)"
      mkdir -p "$local_dir" "$elsewhere" && ln -s "$elsewhere" "$data"
      say "the postgres user cannot reach $root; cluster data kept in $elsewhere (linked from .local/postgresql)"
    fi
    # The server is given the link's target: the postgres user cannot follow a link inside a checkout
    # it cannot reach, and starts from / for the same reason.
    [[ -L "$data" ]] && data=$(readlink -f "$data")
    cd /
  fi
  if ! "$bin/pg_isready" -q -h 127.0.0.1 -p "$port"; then
    mkdir -p "$data"
    if [[ ! -f "$data/PG_VERSION" ]]; then
      say "initialising a private PostgreSQL cluster in $data (password in .local/password)"
      [[ ${#as[@]} -eq 0 ]] || chown -R postgres "$data/"
      # initdb reads the password from a private temporary file (the postgres user may not reach .local).
      local pwfile; pwfile=$(mktemp); password > "$pwfile"
      [[ ${#as[@]} -eq 0 ]] || chown postgres "$pwfile"
      "${as[@]}" "$bin/initdb" -D "$data" -U postgres --auth-host=scram-sha-256 --auth-local=peer \
        --pwfile="$pwfile" -E UTF8 >/dev/null || { rm -f "$pwfile"; exit 1; }
      rm -f "$pwfile"
    fi
    [[ ${#as[@]} -eq 0 ]] || chown -R postgres "$data/"
    say "starting a private PostgreSQL server on 127.0.0.1:$port (data in .local/postgresql)"
    "${as[@]}" "$bin/pg_ctl" -D "$data" -l "$data/server.log" -w -t 60 \
      -o "-p $port -k /tmp -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200" start >&2
  fi
  if grep -qs '^host.*trust' "$data/pg_hba.conf" 2>/dev/null; then
    say "warning: this cluster was initialised with trust authentication; 'local_db.sh stop' and remove .local/postgresql to get a password"
  fi
  echo "export DJ_BACKEND=postgresql DJ_HOST=127.0.0.1 DJ_PORT=$port DJ_USER=postgres DJ_PASS=$(password)"
}

start_mariadb() {
  local port=${PIPELINE_MARIADB_PORT:-53306} data="$local_dir/mariadb"
  install_if_missing mariadbd mariadb-server
  local sock="$data/mysqld.sock" pw; pw=$(password)
  local cnf="$data/client.cnf"  # root's login for the admin commands below, never on a command line
  mkdir -p "$data"
  ( umask 077; printf '[client]\nuser=root\npassword=%s\n' "$pw" > "$cnf" )
  if ! mariadb-admin --defaults-extra-file="$cnf" --socket="$sock" ping >/dev/null 2>&1; then
    mkdir -p "$data"
    if [[ ! -d "$data/db/mysql" ]]; then
      say "initialising a private MariaDB data folder in $data"
      mariadb-install-db --no-defaults --datadir="$data/db" --user="$(id -un)" --skip-test-db \
        --auth-root-authentication-method=normal >/dev/null
    fi
    say "starting a private MariaDB server on 127.0.0.1:$port (data in .local/mariadb)"
    nohup setsid mariadbd --no-defaults --datadir="$data/db" --socket="$sock" --port="$port" --bind-address=127.0.0.1 \
      --user="$(id -un)" --pid-file="$data/mysqld.pid" --log-error="$data/server.log" \
      --max-allowed-packet=1G --innodb-buffer-pool-size=256M --innodb-flush-log-at-trx-commit=2 \
      --character-set-server=utf8mb4 --max-connections=300 >/dev/null 2>&1 &
    # mariadb-admin ping succeeds once the server answers, even when the login is refused.
    for _ in $(seq 60); do
      mariadb-admin --no-defaults --socket="$sock" ping >/dev/null 2>&1 && break
      sleep 1
    done
    mariadb-admin --no-defaults --socket="$sock" ping >/dev/null 2>&1 || { say "MariaDB did not start; see $data/server.log"; exit 1; }
    if mariadb --no-defaults --socket="$sock" -uroot -e "SELECT 1" >/dev/null 2>&1; then
      # A fresh data folder: root has no password yet. Give root (socket and loopback TCP) the generated one.
      # No anonymous grants on test_% databases: the pipeline's role tests use such prefixes.
      mariadb --no-defaults --socket="$sock" -uroot -e "CREATE USER IF NOT EXISTS 'root'@'127.0.0.1';
        ALTER USER 'root'@'127.0.0.1' IDENTIFIED BY '$pw'; ALTER USER 'root'@'localhost' IDENTIFIED BY '$pw';
        GRANT ALL ON *.* TO 'root'@'127.0.0.1' WITH GRANT OPTION;
        DELETE FROM mysql.db WHERE Db IN ('test', 'test\\_%'); FLUSH PRIVILEGES;" >&2
    fi
  fi
  if mariadb --defaults-extra-file="$cnf" -h127.0.0.1 -P"$port" -e "SELECT 1" >/dev/null 2>&1; then
    echo "export DJ_BACKEND=mysql DJ_HOST=127.0.0.1 DJ_PORT=$port DJ_USER=root DJ_PASS=$pw"
  else  # a server started before passwords were generated here: root still has none
    say "warning: root of this MariaDB server has no password; 'local_db.sh stop' and remove .local/mariadb to get one"
    echo "export DJ_BACKEND=mysql DJ_HOST=127.0.0.1 DJ_PORT=$port DJ_USER=root DJ_PASS="
  fi
}

stop() {
  local which=${1:-all}
  if [[ $which == all || $which == postgresql ]] && [[ -f "$local_dir/postgresql/postmaster.pid" ]]; then
    local bin; bin=$(dirname "$(ls -d /usr/lib/postgresql/*/bin/pg_ctl | sort -V | tail -1)")
    if [[ $(id -u) -eq 0 ]]; then (cd / && runuser -u postgres -- "$bin/pg_ctl" -D "$(readlink -f "$local_dir/postgresql")" stop >&2) || true
    else "$bin/pg_ctl" -D "$local_dir/postgresql" stop >&2 || true; fi
  fi
  if [[ $which == all || $which == mariadb ]] && [[ -S "$local_dir/mariadb/mysqld.sock" ]]; then
    mariadb-admin --defaults-extra-file="$local_dir/mariadb/client.cnf" --socket="$local_dir/mariadb/mysqld.sock" \
      shutdown >&2 2>/dev/null || mariadb-admin --no-defaults --socket="$local_dir/mariadb/mysqld.sock" -uroot shutdown >&2 || true
  fi
}

case "${1:-}" in
  postgresql) start_postgresql ;;
  mariadb|mysql) start_mariadb ;;
  stop) stop "${2:-all}" ;;
  *) echo "usage: $0 postgresql|mariadb|stop [backend]" >&2; exit 2 ;;
esac
