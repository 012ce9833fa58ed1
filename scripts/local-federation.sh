#!/usr/bin/env bash
# Starts a local federation of three real fulcrumd daemons on loopback, has two
# providers publish offers, places a contract from the third, and shows the
# contract and both agreement logs from each side. Stops everything on exit.
#
#   bash scripts/local-federation.sh            # keep nothing
#   KEEP=1 bash scripts/local-federation.sh     # leave the daemons running
set -euo pipefail
cd "$(dirname "$0")/.."

cargo build --release -q -p fulcrum-node --bins
bin=target/release
work=$(mktemp -d -t fulcrum-federation.XXXXXX)
pids=()
cleanup() {
  if [ "${KEEP:-0}" = 1 ]; then
    echo; echo "daemons left running in $work (pids ${pids[*]}); stop them with: kill ${pids[*]}"
    return
  fi
  for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT

ctl() { local node=$1; shift; "$bin/fulcrumctl" --socket "$work/$node/admin.sock" "$@"; }

start() { # name port [bootstrap]
  local name=$1 port=$2 boot=${3:-}
  "$bin/fulcrumd" init --data-dir "$work/$name" > "$work/$name.init"
  # Each daemon gets its own metrics port (the default 127.0.0.1:9464 fits one).
  local metrics="127.0.0.1:$(port)"
  local args=(run --data-dir "$work/$name" --listen "/ip4/127.0.0.1/tcp/$port" --federation local-demo
    --metrics-listen "$metrics")
  [ -n "$boot" ] && args+=(--bootstrap "$boot")
  "$bin/fulcrumd" "${args[@]}" 2> "$work/$name.log" &
  pids+=($!)
  for _ in $(seq 100); do ctl "$name" status > /dev/null 2>&1 && break; sleep 0.1; done
  ctl "$name" status > /dev/null || { echo "$name did not start:"; cat "$work/$name.log"; exit 1; }
  echo "started $name on 127.0.0.1:$port  peer $(awk '/peer id/ {print $3}' "$work/$name.init")  metrics http://$metrics/metrics"
}

port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

echo "== three daemons on loopback (data in $work)"
p1=$(port); p2=$(port); p3=$(port)
start frankfurt "$p1"
boot="/ip4/127.0.0.1/tcp/$p1/p2p/$(awk '/peer id/ {print $3}' "$work/frankfurt.init")"
start paris "$p2" "$boot"
start amsterdam "$p3" "$boot"

echo; echo "== providers publish signed offers"
ctl frankfurt offers publish configs/offers/de-general.toml
ctl paris offers publish configs/offers/fr-memory.toml

echo; echo "== amsterdam's offer book (learned by gossip)"
for _ in $(seq 100); do
  [ "$(ctl amsterdam --json offers list | python3 -c 'import json,sys; v=json.load(sys.stdin); print(len(v if isinstance(v,list) else v.get("offers",[])))')" -ge 2 ] && break
  sleep 0.1
done
ctl amsterdam offers list

echo; echo "== amsterdam places 2 units of >= 8 vCPU / 32 GiB in DE or FR for 30 days"
ctl amsterdam place --units 2 --vcpu 8 --memory-mib 32768 --country DE,FR --duration 720h
id=$(ctl amsterdam --json contracts list | python3 -c 'import json,sys; v=json.load(sys.stdin); v=v if isinstance(v,list) else v.get("contracts",[]); print(v[0]["contract_id"])')

echo; echo "== the contract as the consumer (amsterdam) sees it"
ctl amsterdam contracts show "$id"
provider=$(ctl amsterdam --json contracts show "$id" | python3 -c 'import json,sys; print(json.load(sys.stdin)["terms"]["provider"])')
for n in frankfurt paris; do
  if [ "$(ctl "$n" --json status | python3 -c 'import json,sys; print(json.load(sys.stdin)["node_key"])')" = "$provider" ]; then
    echo; echo "== the same contract as the provider ($n) sees it"
    ctl "$n" contracts show "$id"
  fi
done

echo; echo "== both agreement logs"
for n in frankfurt paris amsterdam; do
  ctl "$n" --json status | python3 -c "import json,sys; s=json.load(sys.stdin); print(f'{\"$n\":<10} log size {s[\"log_size\"]:>3}  root {s[\"log_root\"]}  active contracts {s[\"contracts_active\"]}')"
done

echo; echo "== the provider proves the contract is in its log; every log verifies offline"
ctl amsterdam audit prove "$id"
for n in frankfurt paris amsterdam; do
  ctl "$n" audit export --out "$work/$n.export" >/dev/null
  printf '%-10s ' "$n"; "$bin/fulcrumctl" audit verify --export "$work/$n.export" | head -n 1
done
echo; echo "local federation OK"
