#!/usr/bin/env bash
# Start (or reuse) a private database server whose data lives in the ignored folder .local/<backend>,
# and print the DataJoint settings for it as shell `export` lines:
#
#   eval "$(populate/deploy/local_db.sh postgresql)"
#   eval "$(populate/deploy/local_db.sh mariadb)"
#   populate/deploy/local_db.sh stop [postgresql|mariadb]
#   populate/deploy/local_db.sh clean     # stop, then delete this checkout's server data
#
# The server package is installed with apt-get when its programs are missing. Messages go to stderr,
# so that only the exports reach stdout. Servers listen on 127.0.0.1 only; logins need the password
# generated on first use into .local/password (mode 600, ignored by git), which the exports carry.
# Exports are printed only after a login to this checkout's own server (checked by its data folder).
#
# Ports: each checkout's servers get ports of their own, so that checkouts on one machine run side by
# side. A free port (from 55432 for PostgreSQL, 53306 for MariaDB, upwards) is chosen at first start
# and recorded in .local/<backend>.port; it is reused while it is free, and a running server keeps its
# port. PIPELINE_PG_PORT / PIPELINE_MARIADB_PORT, when set, win (and fail if something holds them).
# `stop` and `clean` act only on servers whose pid file and data folder are this checkout's.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd -P)
local_dir="$root/.local"
say() { echo "local_db: $*" >&2; }
die() { say "$*"; exit 1; }

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

# --- whose server is it -------------------------------------------------------------------------

runs_in() {  # pid dir: the process is alive and works in dir (servers change into their data folder)
  local pid=$1 dir cwd; dir=$(readlink -f "$2")
  [[ $pid =~ ^[0-9]+$ ]] && kill -0 "$pid" 2>/dev/null || return 1
  if cwd=$(readlink "/proc/$pid/cwd" 2>/dev/null); then [[ $cwd == "$dir" ]]; return; fi
  tr '\0' ' ' < "/proc/$pid/cmdline" 2>/dev/null | grep -qF -- "$dir"
}

server_pid() {  # pid_file data_dir: print the pid when the file names a live server working in data_dir
  local pid
  [[ -r $1 ]] || return 1
  pid=$(head -1 "$1" 2>/dev/null) || return 1
  runs_in "$pid" "$2" || return 1
  echo "$pid"
}

pg_hashed_dir() { echo "/var/tmp/pipeline-postgresql-$(echo "$root" | md5sum | cut -c1-8)"; }

pg_data_dir() {  # this checkout's PostgreSQL data folder, the link .local/postgresql followed
  local data="$local_dir/postgresql"
  if [[ -L $data ]]; then readlink -f "$data"; else echo "$data"; fi
}

holder() {  # port: who listens on it, as words
  local pid name cwd
  pid=$(ss -Hltnp "sport = :$1" 2>/dev/null | grep -o 'pid=[0-9]*' | head -1 | cut -d= -f2 || true)
  [[ -n $pid ]] || { echo "a process $(id -un) cannot see"; return; }
  name=$(cat "/proc/$pid/comm" 2>/dev/null || echo '?')
  cwd=$(readlink "/proc/$pid/cwd" 2>/dev/null || true)
  case $cwd in
    */.local/postgresql) echo "pid $pid ($name), the private PostgreSQL server of checkout ${cwd%/.local/postgresql}" ;;
    */.local/mariadb/db) echo "pid $pid ($name), the private MariaDB server of checkout ${cwd%/.local/mariadb/db}" ;;
    /var/tmp/pipeline-postgresql-*)
      echo "pid $pid ($name), the private PostgreSQL server of checkout $(cat "$cwd/pipeline-checkout" 2>/dev/null \
        || echo "unknown (data in $cwd)")" ;;
    *) echo "pid $pid ($name), not a checkout's private server" ;;
  esac
}

# --- ports --------------------------------------------------------------------------------------

port_free() {  # port: nothing listens on 127.0.0.1:port (bound as a server would, with SO_REUSEADDR)
  python3 -c 'import socket, sys
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); s.bind(("127.0.0.1", int(sys.argv[1])))' \
    "$1" 2>/dev/null
}

choose_port() {  # backend variable default: print the port this checkout's server is to start on
  local backend=$1 variable=$2 default=$3 record="$local_dir/$1.port" port
  if [[ -n ${!variable:-} ]]; then
    port=${!variable}
    port_free "$port" || die "port $port (from $variable) is in use by $(holder "$port"); unset $variable or choose another"
    echo "$port"; return
  fi
  if [[ -s $record ]]; then
    port=$(cat "$record")
    if port_free "$port"; then echo "$port"; return; fi
    say "port $port, recorded for this checkout's $backend server, is in use by $(holder "$port"); choosing another"
  fi
  for port in $(seq "$default" $((default + 999))); do
    if port_free "$port"; then echo "$port"; return; fi
  done
  die "no free port in $default-$((default + 999)) for this checkout's $backend server"
}

lock() {  # one checkout at a time chooses a port and starts its server on it (released on exit)
  local file=/tmp/pipeline-local-db.lock
  command -v flock >/dev/null 2>&1 || return 0
  [[ -e $file ]] || ( umask 000; : >> "$file" ) 2>/dev/null || true
  exec 9<"$file"
  flock -w 300 9 || die "another checkout has held $file for 5 minutes"
  locked=1
}
unlock() { if [[ -n ${locked:-} ]]; then flock -u 9; exec 9<&-; locked=; fi; }

# --- PostgreSQL ---------------------------------------------------------------------------------

pg_bindir() {
  local initdb; initdb=$(ls -d /usr/lib/postgresql/*/bin/initdb 2>/dev/null | sort -V | tail -1)
  [[ -n $initdb ]] || initdb=$(command -v initdb)
  dirname "$initdb"
}

start_postgresql() {
  local data="$local_dir/postgresql" bin port pid
  install_if_missing initdb postgresql
  bin=$(pg_bindir)
  # PostgreSQL refuses to run as root: as root, run it as the `postgres` system user.
  local as=()
  if [[ $(id -u) -eq 0 ]]; then
    as=(runuser -u postgres --)
    # The postgres user may not reach a checkout under /root: keep the data where it can, linked here.
    mkdir -p "$local_dir"
    if [[ ! -e "$data" ]] && ! runuser -u postgres -- test -x "$local_dir" 2>/dev/null; then
      local elsewhere; elsewhere=$(pg_hashed_dir)
      mkdir -p "$elsewhere" && ln -s "$elsewhere" "$data"
      say "the postgres user cannot reach $root; cluster data kept in $elsewhere (linked from .local/postgresql)"
    fi
    # The server is given the link's target: the postgres user cannot follow a link inside a checkout
    # it cannot reach, and starts from / for the same reason.
    data=$(pg_data_dir)
    cd /
  fi
  if pid=$(server_pid "$data/postmaster.pid" "$data"); then
    port=$(sed -n 4p "$data/postmaster.pid")
    [[ -z ${PIPELINE_PG_PORT:-} || $PIPELINE_PG_PORT == "$port" ]] || die "this checkout's PostgreSQL server" \
      "(pid $pid) runs on port $port, not PIPELINE_PG_PORT=$PIPELINE_PG_PORT; 'local_db.sh stop postgresql' first"
  else
    lock
    port=$(choose_port postgresql PIPELINE_PG_PORT 55432)
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
    [[ $data == "$local_dir/postgresql" ]] || echo "$root" > "$data/pipeline-checkout"  # names it for holder()
    [[ ${#as[@]} -eq 0 ]] || chown -R postgres "$data/"
    say "starting a private PostgreSQL server on 127.0.0.1:$port (data in .local/postgresql)"
    "${as[@]}" "$bin/pg_ctl" -D "$data" -l "$data/server.log" -w -t 60 \
      -o "-p $port -k /tmp -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200" start >&2 9<&- \
      || die "PostgreSQL did not start on port $port; see $data/server.log"
    echo "$port" > "$local_dir/postgresql.port"
    unlock
  fi
  if grep -qs '^host.*trust' "$data/pg_hba.conf" 2>/dev/null; then
    say "warning: this cluster was initialised with trust authentication; 'local_db.sh clean' to get a password"
  fi
  # Log in as the exports will, and check that the server answering is this checkout's.
  local shown
  shown=$(PGPASSWORD=$(password) PGCONNECT_TIMEOUT=10 "$bin/psql" -X -q -w -h 127.0.0.1 -p "$port" -U postgres \
    -d postgres -tAc 'SHOW data_directory' 2>&1 | head -1) || true
  [[ $(readlink -f "$shown" 2>/dev/null) == "$data" ]] || die "cannot log in to this checkout's PostgreSQL" \
    "server on 127.0.0.1:$port with .local/password (${shown:-no answer}); 'local_db.sh clean' starts afresh"
  echo "export DJ_BACKEND=postgresql DJ_HOST=127.0.0.1 DJ_PORT=$port DJ_USER=postgres DJ_PASS=$(password)"
}

# --- MariaDB ------------------------------------------------------------------------------------

start_mariadb() {
  local data="$local_dir/mariadb" port pid
  install_if_missing mariadbd mariadb-server
  local sock="$data/mysqld.sock" pw; pw=$(password)
  local cnf="$data/client.cnf"  # root's login for the admin commands below, never on a command line
  mkdir -p "$data"
  ( umask 077; printf '[client]\nuser=root\npassword=%s\n' "$pw" > "$cnf" )
  if ! pid=$(server_pid "$data/mysqld.pid" "$data/db"); then
    lock
    port=$(choose_port mariadb PIPELINE_MARIADB_PORT 53306)
    if [[ ! -d "$data/db/mysql" ]]; then
      say "initialising a private MariaDB data folder in $data"
      mariadb-install-db --no-defaults --datadir="$data/db" --user="$(id -un)" --skip-test-db \
        --auth-root-authentication-method=normal >/dev/null
    fi
    say "starting a private MariaDB server on 127.0.0.1:$port (data in .local/mariadb)"
    rm -f "$sock"
    nohup setsid mariadbd --no-defaults --datadir="$data/db" --socket="$sock" --port="$port" --bind-address=127.0.0.1 \
      --user="$(id -un)" --pid-file="$data/mysqld.pid" --log-error="$data/server.log" \
      --max-allowed-packet=1G --innodb-buffer-pool-size=256M --innodb-flush-log-at-trx-commit=2 \
      --character-set-server=utf8mb4 --max-connections=300 >/dev/null 2>&1 9<&- &
    local started=$!
    # mariadb-admin ping succeeds once the server answers, even when the login is refused.
    for _ in $(seq 120); do
      mariadb-admin --no-defaults --socket="$sock" ping >/dev/null 2>&1 && break
      kill -0 "$started" 2>/dev/null || break
      sleep 0.5
    done
    mariadb-admin --no-defaults --socket="$sock" ping >/dev/null 2>&1 || die "MariaDB did not start on port $port" \
      "($(grep -s 'ERROR' "$data/server.log" | tail -1 | cut -c1-160)); see $data/server.log"
    echo "$port" > "$local_dir/mariadb.port"
    unlock
  fi
  if mariadb --no-defaults --socket="$sock" -uroot -e "SELECT 1" >/dev/null 2>&1; then
    # A fresh data folder (or one from before passwords): root has none. Give root (socket and loopback
    # TCP) the generated one. No anonymous grants on test_% databases: the role tests use such prefixes.
    mariadb --no-defaults --socket="$sock" -uroot -e "CREATE USER IF NOT EXISTS 'root'@'127.0.0.1';
      ALTER USER 'root'@'127.0.0.1' IDENTIFIED BY '$pw'; ALTER USER 'root'@'localhost' IDENTIFIED BY '$pw';
      GRANT ALL ON *.* TO 'root'@'127.0.0.1' WITH GRANT OPTION;
      DELETE FROM mysql.db WHERE Db IN ('test', 'test\\_%'); FLUSH PRIVILEGES;" >&2
  fi
  port=$(mariadb --defaults-extra-file="$cnf" --socket="$sock" -N -B -e 'SELECT @@port' 2>/dev/null) \
    || die "cannot log in as root to this checkout's MariaDB server with .local/password; 'local_db.sh clean' starts afresh"
  [[ -z ${PIPELINE_MARIADB_PORT:-} || $PIPELINE_MARIADB_PORT == "$port" ]] || die "this checkout's MariaDB server" \
    "runs on port $port, not PIPELINE_MARIADB_PORT=$PIPELINE_MARIADB_PORT; 'local_db.sh stop mariadb' first"
  # Log in as the exports will, over TCP, and check that the server answering is this checkout's.
  local shown
  shown=$(mariadb --defaults-extra-file="$cnf" --protocol=TCP -h127.0.0.1 -P"$port" --connect-timeout=10 -N -B \
    -e 'SELECT @@datadir' 2>&1 | head -1) || true
  [[ $(readlink -f "$shown" 2>/dev/null) == "$(readlink -f "$data/db")" ]] || die "cannot log in to this" \
    "checkout's MariaDB server on 127.0.0.1:$port with .local/password (${shown:-no answer})"
  echo "export DJ_BACKEND=mysql DJ_HOST=127.0.0.1 DJ_PORT=$port DJ_USER=root DJ_PASS=$pw"
}

# --- stop and clean -----------------------------------------------------------------------------

wait_gone() {  # pid what
  for _ in $(seq 120); do kill -0 "$1" 2>/dev/null || return 0; sleep 0.5; done
  die "$2 (pid $1) is still running"
}

stop() {
  local which=${1:-all} data pid
  if [[ $which == all || $which == postgresql ]]; then
    data=$(pg_data_dir)
    if pid=$(server_pid "$data/postmaster.pid" "$data"); then
      say "stopping this checkout's PostgreSQL server (pid $pid, data in $data)"
      local bin; bin=$(pg_bindir)
      if [[ $(id -u) -eq 0 ]]; then (cd / && runuser -u postgres -- "$bin/pg_ctl" -D "$data" -w stop >&2) || true
      else "$bin/pg_ctl" -D "$data" -w stop >&2 || true; fi
      wait_gone "$pid" "this checkout's PostgreSQL server"
    elif [[ -e $data/postmaster.pid ]]; then
      say "no PostgreSQL server of this checkout is running (stale $data/postmaster.pid left alone)"
    fi
  fi
  if [[ $which == all || $which == mariadb ]]; then
    data="$local_dir/mariadb"
    if pid=$(server_pid "$data/mysqld.pid" "$data/db"); then
      say "stopping this checkout's MariaDB server (pid $pid, data in $data)"
      mariadb-admin --defaults-extra-file="$data/client.cnf" --socket="$data/mysqld.sock" shutdown >/dev/null 2>&1 \
        || mariadb-admin --no-defaults --socket="$data/mysqld.sock" -uroot shutdown >/dev/null 2>&1 \
        || kill -TERM "$pid"
      wait_gone "$pid" "this checkout's MariaDB server"
    elif [[ -e $data/mysqld.pid ]]; then
      say "no MariaDB server of this checkout is running (stale $data/mysqld.pid left alone)"
    fi
  fi
}

clean() {  # stop this checkout's servers, then delete their data (the PostgreSQL data under /var/tmp too)
  stop all
  local link="$local_dir/postgresql" target
  if [[ -L $link ]]; then
    target=$(readlink -f "$link")
    if [[ $target == "$(pg_hashed_dir)" || $(cat "$target/pipeline-checkout" 2>/dev/null) == "$root" ]]; then
      say "deleting $target"; rm -rf "$target"
    else
      say "leaving $target alone: .local/postgresql links there, but it is not this checkout's data folder"
    fi
  fi
  rm -rf "$link" "$local_dir/mariadb" "$local_dir/postgresql.port" "$local_dir/mariadb.port"
}

case "${1:-}" in
  postgresql) start_postgresql ;;
  mariadb|mysql) start_mariadb ;;
  stop) stop "${2:-all}" ;;
  clean) clean ;;
  *) echo "usage: $0 postgresql|mariadb|stop [backend]|clean" >&2; exit 2 ;;
esac
