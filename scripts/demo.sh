#!/usr/bin/env bash
# make demo: boot a lab host (a real Debian systemd host in systemd-nspawn, tests/lab), run
# `ansible-playbook nspawn.nixos.site` against it, and show the NixOS machine it made.
#
#   scripts/demo.sh                      the lab's fixture image, served inside the host
#   SIDECAR_IMAGE_URL=https://... SIDECAR_IMAGE_CHECKSUM=sha256:... scripts/demo.sh
#                                        another image; the controller downloads it (the lab hosts
#                                        have no network) and copies it to the host
#
# Settings (environment): DEMO_LAB (lab name, default demo), DEMO_RELEASE (Debian 12 or 13,
# default 12), VENV (default .venv of the checkout). Run as root, after `make deps`.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VENV=${VENV:-$ROOT/.venv}
LAB_NAME=${DEMO_LAB:-demo}
RELEASE=${DEMO_RELEASE:-12}
HOST="$LAB_NAME-debian$RELEASE-1"
export PYTHONPATH="$ROOT/tests"
export ANSIBLE_COLLECTIONS_PATH="${ANSIBLE_COLLECTIONS_PATH:-$ROOT/tests/output/collections}"
export ANSIBLE_HOST_KEY_CHECKING=False ANSIBLE_RETRY_FILES_ENABLED=False ANSIBLE_PIPELINING=True
LAB=("$VENV/bin/python" -m lab)

say() { printf '\n==> %s\n' "$*"; }
on_host() { "${LAB[@]}" ssh "$HOST" "$@"; }

link="$ROOT/tests/output/collections/ansible_collections/nspawn/nixos"
[ -e "$link" ] || { mkdir -p "$(dirname "$link")" && ln -sfn ../../../../.. "$link"; }

say "Booting lab host $HOST (Debian $RELEASE, systemd as PID 1)"
"${LAB[@]}" up --name "$LAB_NAME" --release "$RELEASE" --replace
inventory=$("${LAB[@]}" inventory --name "$LAB_NAME")

# Beside the lab's inventory, so that it goes with `make lab-down` and can be used again.
vars="$(dirname "$inventory")/demo-vars.yml"
if [ -n "${SIDECAR_IMAGE_URL:-}" ]; then
    # Another image (the real NixOS one, say): the lab host has no route out, so the controller
    # downloads it. No NixOS settings: nixos-rebuild of a real NixOS needs the network too.
    image="$SIDECAR_IMAGE_URL"
    cat >"$vars" <<EOF
sidecar_image_url: "$SIDECAR_IMAGE_URL"
sidecar_image_checksum: "${SIDECAR_IMAGE_CHECKSUM:-}"
sidecar_image_source: controller
EOF
else
    image="the lab's fixture image (Debian with nix-bin and a nixos-rebuild test double, standing in for NixOS)"
    cat >"$vars" <<'EOF'
sidecar_image_url: "{{ lab_image_url }}"
sidecar_image_checksum: "{{ lab_image_sha256 }}"
sidecar_nixos_settings:
  time:
    timeZone: UTC
  environment:
    etc:
      motd:
        text: "Hello from nspawn.nixos (make demo)\n"
EOF
fi
# The password "nixos", for the demo only (openssl passwd -6). Keep real hashes in a vault.
cat >>"$vars" <<'EOF'
sidecar_root_password_hash: "$6$nspawndemo$tjmI7AC56cqI6Nu73ZqqeGwu9BAdFBSMZj22W.oDiKqX0l70Vwq03FHU/7h4iEzbjPcuaG2ctwKvBIBO5XpfN1"
sidecar_binds:
  - /srv/demo:/srv/demo
EOF
on_host "mkdir -p /srv/demo && chmod 1777 /srv/demo && echo 'shared from the host' > /srv/demo/README"

say "ansible-playbook -i $inventory nspawn.nixos.site  (image: $image)"
started=$(date +%s)
"$VENV/bin/ansible-playbook" -i "$inventory" nspawn.nixos.site -e "@$vars"
echo "converged in $(( $(date +%s) - started )) s"

say "What it did on $HOST"
show_on_host() {
    local script="" command
    for command in "$@"; do
        script+="echo; echo '\$ $command'; $command; "
    done
    on_host "$script"
}
show_on_host "machinectl list --no-pager" "machinectl list-images --no-pager" "cat /etc/systemd/nspawn/nixos.nspawn" \
    "systemctl is-enabled systemd-nspawn@nixos.service" "cat /var/lib/nspawn-nixos/origin/nixos.json"

say "machinectl status nixos"
on_host "machinectl status nixos --no-pager --lines=5" || true

say "Inside the machine"
show_on_host "systemd-run -M nixos --wait --pipe -q /run/current-system/sw/bin/cat /etc/os-release" \
    "systemd-run -M nixos --wait --pipe -q /run/current-system/sw/bin/cat /srv/demo/README" \
    "readlink /var/lib/machines/nixos/nix/var/nix/profiles/system" || true

cat <<EOF

==> Look around
  log into the host:          PYTHONPATH=tests $VENV/bin/python -m lab ssh $HOST
  a shell in the machine:     ... ssh $HOST then: machinectl shell nixos   (or machinectl login nixos, root password: nixos)
  run a command inside:       PYTHONPATH=tests $VENV/bin/python -m lab ssh $HOST systemd-run -M nixos --wait --pipe -q /run/current-system/sw/bin/systemctl status
  the NixOS configuration:    PYTHONPATH=tests $VENV/bin/python -m lab ssh $HOST cat /var/lib/machines/nixos/etc/nixos/ansible.nix
  run the playbook again:     ANSIBLE_COLLECTIONS_PATH=$ANSIBLE_COLLECTIONS_PATH $VENV/bin/ansible-playbook -i $inventory nspawn.nixos.site -e @$vars
  remove the sidecar:         ... the same with -e sidecar_state=absent
  stop the lab host:          make lab-down LAB_NAME=$LAB_NAME
EOF
