#!/usr/bin/env bash
# Starts — or reuses — the Redis and PostgreSQL that herd uses, on this machine.
# Installs them with apt when missing (Debian), starts them when nothing listens on their ports,
# and creates the `herd` database. Safe to run again: what already runs is left alone, and a
# PostgreSQL this script did not start keeps its credentials (set DATABASE_URL to match them).
set -euo pipefail

REDIS_PORT="${REDIS_PORT:-6379}"
PG_PORT="${PG_PORT:-5432}"
DB_NAME="${HERD_DB_NAME:-herd}"
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"

listening() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
wait_for() {
  for _ in $(seq 1 60); do listening "$1" && return 0; sleep 0.5; done
  echo "services: nothing listens on 127.0.0.1:$1 after 30 s ($2)" >&2
  return 1
}
apt_install() {
  echo "services: installing $* with apt"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "$@" >/dev/null
}

# The fault tests start Redis servers of their own (to kill and restart them): the binary is
# needed even when a Redis already listens.
command -v redis-server >/dev/null || apt_install redis-server
if listening "$REDIS_PORT"; then
  echo "services: reusing Redis on 127.0.0.1:$REDIS_PORT"
else
  $SUDO redis-server --daemonize yes --bind 127.0.0.1 --port "$REDIS_PORT" --save "" --appendonly no \
    --dir /tmp --logfile /tmp/herd-redis.log
  wait_for "$REDIS_PORT" "redis-server, see /tmp/herd-redis.log"
  echo "services: started Redis on 127.0.0.1:$REDIS_PORT"
fi

started_pg=0
if listening "$PG_PORT"; then
  echo "services: reusing PostgreSQL on 127.0.0.1:$PG_PORT"
else
  started_pg=1
  command -v pg_ctlcluster >/dev/null || apt_install postgresql
  version="$(ls /etc/postgresql | sort -V | tail -n 1)"
  $SUDO pg_ctlcluster --skip-systemctl-redirect "$version" main start
  wait_for "$PG_PORT" "pg_ctlcluster $version main"
  echo "services: started PostgreSQL $version on 127.0.0.1:$PG_PORT"
fi

# psql as the postgres superuser: over TCP where trust/password auth allows it, else via the socket.
pg() {
  if PGPASSWORD=postgres psql -h 127.0.0.1 -p "$PG_PORT" -U postgres -d postgres -tAc 'select 1' >/dev/null 2>&1; then
    PGPASSWORD=postgres psql -h 127.0.0.1 -p "$PG_PORT" -U postgres -d postgres -v ON_ERROR_STOP=1 -tAc "$1"
  else
    $SUDO runuser -u postgres -- psql -p "$PG_PORT" -d postgres -v ON_ERROR_STOP=1 -tAc "$1"
  fi
}
# A fresh Debian cluster has no password for postgres: the one this script started gets the one
# DATABASE_URL uses by default. A server that was already running is never altered.
if [ "$started_pg" = 1 ] && ! PGPASSWORD=postgres psql -h 127.0.0.1 -p "$PG_PORT" -U postgres -d postgres -tAc 'select 1' >/dev/null 2>&1; then
  $SUDO runuser -u postgres -- psql -p "$PG_PORT" -d postgres -v ON_ERROR_STOP=1 -tAc "ALTER USER postgres PASSWORD 'postgres'" >/dev/null
fi
if [ "$(pg "SELECT 1 FROM pg_database WHERE datname = '$DB_NAME'")" != "1" ]; then
  pg "CREATE DATABASE $DB_NAME" >/dev/null
  echo "services: created database $DB_NAME"
fi
echo "services: REDIS_URL=redis://127.0.0.1:$REDIS_PORT DATABASE_URL=postgres://postgres:postgres@127.0.0.1:$PG_PORT/$DB_NAME"
