#!/bin/sh
# Example fulcrumd provisioning hook: turns contract events into capacity on
# the provider's own platform. Configure it in node.toml for every event:
#
#   [hooks]
#   on_active = ["/etc/fulcrum/hooks/provision.sh"]
#   on_terminated = ["/etc/fulcrum/hooks/provision.sh"]
#   on_expired = ["/etc/fulcrum/hooks/provision.sh"]
#
# fulcrumd runs it with one JSON object on stdin (the event and the contract,
# as `fulcrumctl --json contracts show` prints it) and these variables:
#
#   FULCRUM_EVENT         active | terminated | expired
#   FULCRUM_EVENT_ID      the position of the event's record in the node's log
#   FULCRUM_CONTRACT_ID   the contract id (hex)
#   FULCRUM_ROLE          provider | consumer
#   FULCRUM_HOOK_ATTEMPT  1, then 2, 3, ... while earlier attempts failed
#
# Exit 0 when the work is done. Any other exit (or running past the timeout)
# makes fulcrumd log it and call again later with the same event; later
# events wait until this one succeeds. An event can also come again after a
# crash, so the script remembers the event ids it has handled and does
# nothing for one it has seen.
#
# Settings (environment of fulcrumd, e.g. Environment= in the systemd unit):
#
#   FULCRUM_PLATFORM        proxmox | openstack | kubernetes | none (default:
#                           only log what would be done)
#   FULCRUM_HOOK_STATE_DIR  where handled event ids are kept (default
#                           /var/lib/fulcrum/hooks; must be writable)
#
# Needs jq to read the JSON.

set -eu

platform=${FULCRUM_PLATFORM:-none}
state_dir=${FULCRUM_HOOK_STATE_DIR:-/var/lib/fulcrum/hooks}
event=${FULCRUM_EVENT:?run by fulcrumd: FULCRUM_EVENT is not set}
event_id=${FULCRUM_EVENT_ID:?run by fulcrumd: FULCRUM_EVENT_ID is not set}
contract_id=${FULCRUM_CONTRACT_ID:?run by fulcrumd: FULCRUM_CONTRACT_ID is not set}
role=${FULCRUM_ROLE:?run by fulcrumd: FULCRUM_ROLE is not set}

command -v jq >/dev/null || { echo "provision.sh needs jq" >&2; exit 1; }
mkdir -p "$state_dir"
done_marker="$state_dir/$event_id.done"
if [ -e "$done_marker" ]; then
    echo "event $event_id ($event of $contract_id) was handled before; nothing to do"
    exit 0
fi

input=$(cat)
field() { printf '%s' "$input" | jq -er "$1"; }
units=$(field .contract.terms.units)
flavour=$(field .contract.terms.flavour.name)
vcpu=$(( $(field .contract.terms.flavour.vcpu) * units ))
memory_mib=$(( $(field .contract.terms.flavour.memory_mib) * units ))
storage_gib=$(( $(field .contract.terms.flavour.storage_gib) * units ))
end_ms=$(field .contract.terms.end_ms)
# One tenant per contract, named after its id: a retried or repeated call
# finds what an earlier one created.
tenant="fulcrum-$(printf '%s' "$contract_id" | cut -c1-12)"

provision() {
    echo "provisioning $tenant: $units x $flavour ($vcpu vCPU, $memory_mib MiB, $storage_gib GiB) until $end_ms ms"
    case "$platform" in
    proxmox)
        # A resource pool per contract; VMs for the customer go into it.
        pvesh get "/pools/$tenant" >/dev/null 2>&1 ||
            pvesh create /pools --poolid "$tenant" --comment "fulcrum contract $contract_id"
        ;;
    openstack)
        # A project per contract, its quotas the contracted resources.
        openstack project show "$tenant" >/dev/null 2>&1 ||
            openstack project create --description "fulcrum contract $contract_id" "$tenant"
        openstack quota set --cores "$vcpu" --ram "$memory_mib" --gigabytes "$storage_gib" "$tenant"
        ;;
    kubernetes)
        # A namespace per contract, capped by a ResourceQuota.
        kubectl create namespace "$tenant" --dry-run=client -o yaml | kubectl apply -f -
        kubectl -n "$tenant" create quota fulcrum-contract --dry-run=client -o yaml \
            --hard="requests.cpu=$vcpu,requests.memory=${memory_mib}Mi,requests.storage=${storage_gib}Gi" |
            kubectl apply -f -
        ;;
    none) ;;
    *) echo "unknown FULCRUM_PLATFORM $platform" >&2; exit 1 ;;
    esac
}

deprovision() {
    echo "releasing $tenant ($event)"
    case "$platform" in
    proxmox)
        # Refuses while the pool still holds guests: they must be moved or
        # removed first, which is the customer's data and the operator's call.
        if pvesh get "/pools/$tenant" >/dev/null 2>&1; then pvesh delete "/pools/$tenant"; fi
        ;;
    openstack)
        if openstack project show "$tenant" >/dev/null 2>&1; then openstack project delete "$tenant"; fi
        ;;
    kubernetes)
        kubectl delete namespace "$tenant" --ignore-not-found
        ;;
    none) ;;
    *) echo "unknown FULCRUM_PLATFORM $platform" >&2; exit 1 ;;
    esac
}

case "$role:$event" in
provider:active) provision ;;
provider:terminated | provider:expired) deprovision ;;
consumer:*)
    # The buying side: tell the customer's systems where the capacity is.
    echo "contract $contract_id is $event at the provider $(field .contract.terms.provider)"
    ;;
esac

# Remembered only once the work is done (a crash before this line means the
# event comes again, and the work above finds what it already did).
touch "$done_marker.tmp" && mv "$done_marker.tmp" "$done_marker"
