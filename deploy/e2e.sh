#!/usr/bin/env bash
# make e2e: bring the demo stack up, prove it end to end (deploy/e2e), and
# always tear it down, leaving nothing running. Needs Docker with
# `docker compose` or `docker-compose`; the image comes from `make images`.
set -euo pipefail
cd "$(dirname "$0")/.."

if docker compose version >/dev/null 2>&1; then compose="docker compose"
elif command -v docker-compose >/dev/null 2>&1; then compose="docker-compose"
else echo "e2e: neither 'docker compose' nor 'docker-compose' found"; exit 1; fi
stack="$compose -p edgestack -f deploy/compose.yaml"
# The image is FROM scratch with no build steps: the classic builder does it
# without BuildKit (which this machine may lack).
export DOCKER_BUILDKIT=0 COMPOSE_DOCKER_CLI_BUILD=0

mkdir -p build/e2e
go build -o build/e2e/ ./cmd/edgectl ./deploy/e2e

teardown() {
  local t0=$SECONDS
  $stack down --volumes --remove-orphans >/dev/null 2>&1 || true
  left=$(docker ps -aq --filter label=com.docker.compose.project=edgestack | wc -l)
  if [ "$left" -eq 0 ]; then
    echo "PASS 7. tear down: nothing left running ($((SECONDS - t0))s)"
  else
    echo "FAIL 7. tear down: $left containers left"; exit 1
  fi
}
trap teardown EXIT

t0=$SECONDS
echo "== starting the stack ($compose)"
$stack down --volumes --remove-orphans >/dev/null 2>&1 || true
$stack up -d --build
# Wait for every long-running service to be healthy (certd is healthy once
# serving; the certificates follow within seconds).
for i in $(seq 1 120); do
  unhealthy=$($stack ps | grep -cE 'starting|unhealthy|Exit [1-9]' || true)
  [ "$unhealthy" -eq 0 ] && break
  sleep 1
done
$stack ps
echo "== stack up in $((SECONDS - t0))s"

E2E_COMPOSE="$stack" ./build/e2e/e2e -edgectl ./build/e2e/edgectl
