#!/usr/bin/env bash
# Start PostgreSQL and Redis when they are down (CI machines start them already; this is
# for the case where they stopped). Prints what it found.
set -u
if ! pg_isready -h 127.0.0.1 -p 5432 -q 2>/dev/null; then
  echo "PostgreSQL is down; starting it"
  pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -n1)" main start || true
fi
if ! redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1; then
  echo "Redis is down; starting it"
  redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no \
    --dir /var/lib/redis --logfile /var/log/redis/ci.log || true
fi
pg_isready -h 127.0.0.1 -p 5432 >/dev/null 2>&1 && echo "PostgreSQL: up" || echo "PostgreSQL: unavailable"
redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1 && echo "Redis: up" || echo "Redis: unavailable"
