#!/usr/bin/env bash
# make dev: the demo stack's topology as local processes on loopback, for
# machines without Docker. Certificates come from certd's built-in local CA
# (no ACME CA needed); everything else is as in compose.yaml, on 127.0.0.x:
#
#   dnsd   127.0.0.1:5301 (udp+tcp)     admin 127.0.0.1:9101
#   certd                               admin 127.0.0.1:9102
#   edge1  127.0.0.11:8080 / :8443      admin 127.0.0.11:9103
#   edge2  127.0.0.12:8080 / :8443      admin 127.0.0.12:9103
#   lbd    127.0.0.20:8443 (https), 127.0.0.20:8080 (http)   admin 127.0.0.1:9104
#   api-1..3  127.0.0.1:18081..18083
#
# Ctrl-C stops everything it started. State lives in .dev/ (delete to reset).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
state=$root/.dev
mkdir -p "$state/certs" "$state/dns" bin
go build -o bin/ ./cmd/... ./deploy/demoapi

pids=()
cleanup() {
  echo; echo "stopping ${#pids[@]} processes"
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap cleanup EXIT INT TERM

[ -f "$state/admin-token" ] || head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n' > "$state/admin-token"
export EDGECTL_TOKEN=$(cat "$state/admin-token")

# Configs: the compose ones, with loopback addresses and local paths.
sed -e "s|/etc/edgestack/zones|$root/deploy/zones|; s|/var/lib/edgestack/dns|$state/dns|; s|/etc/edgestack/admin-token|$state/admin-token|" \
    -e 's|listen: ":53"|listen: "127.0.0.1:5301"|; s|listen: ":9101"|listen: "127.0.0.1:9101"|' \
    -e 's|172.30.0.11:80|127.0.0.11:8080|; s|172.30.0.12:80|127.0.0.12:8080|; s|172.30.0.20:443|127.0.0.20:8443|' \
    deploy/config/dnsd.yaml > "$state/dnsd.yaml"
sed -e 's|172.30.0.11|127.0.0.11|; s|172.30.0.12|127.0.0.12|; s|172.30.0.20|127.0.0.20|' deploy/config/records.yaml > "$state/records.yaml"
sed -e 's|172.30.0.53|127.0.0.1|; s|^edge1 .*|edge1   IN A    127.0.0.11|; s|^edge2 .*|edge2   IN A    127.0.0.12|' deploy/zones/example.test.zone > "$state/example.test.zone"
sed -i "s|$root/deploy/zones/example.test.zone|$state/example.test.zone|" "$state/dnsd.yaml"
cat > "$state/certd.yaml" <<YAML
storage: {dir: $state/certs}
issuers: [{name: local, type: local_ca}]
certificates:
  - names: [example.test, "*.example.test"]
    issuers: [local]
admin: {listen: "127.0.0.1:9102", token_file: $state/admin-token}
YAML
for n in 1 2; do
  sed -e "s|address: \":80\"|address: \"127.0.0.1$n:8080\"|; s|address: \":443\"|address: \"127.0.0.1$n:8443\"|" \
      -e "s|/var/lib/edgestack/certs|$state/certs|; s|/srv/site|$root/deploy/site|; s|/etc/edgestack/admin-token|$state/admin-token|" \
      -e "s|http://172.31.0.20:8080|http://127.0.0.20:8080|; s|listen: \":9103\"|listen: \"127.0.0.1$n:9103\"|" \
      deploy/config/edged.yaml > "$state/edge$n.yaml"
  sed -i "s|127.0.0.1$n:|127.0.0.$((10 + n)):|g" "$state/edge$n.yaml"
done
sed -e 's|"api-\([123]\):8080"|"127.0.0.1:1808\1"|g; s|listen: ":443"|listen: "127.0.0.20:8443"|; s|listen: ":8080"|listen: "127.0.0.20:8080"|' \
    -e "s|/var/lib/edgestack/certs|$state/certs|; s|/etc/edgestack/admin-token|$state/admin-token|; s|listen: \":9104\"|listen: \"127.0.0.1:9104\"|" \
    deploy/config/lbd.yaml > "$state/lbd.yaml"

start() { local name=$1; shift; "$@" > "$state/$name.log" 2>&1 & pids+=($!); echo "started $name (pid $!, log .dev/$name.log)"; }
for n in 1 2 3; do start "api-$n" bin/demoapi -listen "127.0.0.1:1808$n" -name "api-$n"; done
start dnsd bin/dnsd run -config "$state/dnsd.yaml" -log-format text
start certd bin/certd run -config "$state/certd.yaml" -log-format text
ready() { # wait for a daemon's /readyz; give up (and stop everything) if it does not come
  local bin=$1 name=$2 cfg=$3
  for i in $(seq 1 100); do bin/$bin healthcheck -config "$cfg" >/dev/null 2>&1 && return 0; sleep 0.2; done
  echo "$name did not become ready; last log lines:"; tail -n 5 "$state/$name.log"; exit 1
}
ready dnsd dnsd "$state/dnsd.yaml"
ready certd certd "$state/certd.yaml"
bin/edgectl dns change -dnsd http://127.0.0.1:9101 -file "$state/records.yaml" example.test.
start edge1 bin/edged run -config "$state/edge1.yaml" -log-format text
start edge2 bin/edged run -config "$state/edge2.yaml" -log-format text
start lbd bin/lbd run -config "$state/lbd.yaml" -log-format text
ready edged edge1 "$state/edge1.yaml"; ready edged edge2 "$state/edge2.yaml"; ready lbd lbd "$state/lbd.yaml"

cat <<TXT

edgestack dev stack running. Try:
  kdig @127.0.0.1 -p 5301 www.example.test
  curl http://127.0.0.1:9102/v1/localca/root > .dev/root.pem
  curl --cacert .dev/root.pem --resolve www.example.test:8443:127.0.0.11 https://www.example.test:8443/ -I
  curl --cacert .dev/root.pem --resolve www.example.test:8443:127.0.0.12 https://www.example.test:8443/api/hello
  EDGECTL_TOKEN=\$(cat .dev/admin-token) bin/edgectl cdn invalidate -edged http://127.0.0.11:9103,http://127.0.0.12:9103 '/*'
Ctrl-C stops it.
TXT
wait
