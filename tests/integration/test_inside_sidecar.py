"""Tasks inside a sidecar: the nspawn.nixos.machine connection and the nspawn.nixos.sidecars inventory plugin.

On every lab host (real systemd, reached over real SSH through the lab's ProxyCommand), the role
provisions a sidecar of the lab's FIXTURE image whose NixOS settings add python3; a second play
of the same run targets the group the role added it to, over the connection plugin:

- raw without Python, exit codes and stdin kept, stdout and stderr apart;
- modules with the machine's Python (/run/current-system/sw/bin/python3): copy (a file in through
  the pipe), stat, fetch (a file out), command;
- become_user inside the machine (systemd-run --uid), no sudo in the machine;
- the inventory plugin builds the same hosts and groups from the inventory alone;
- a stopped machine fails as unreachable, with one line naming the host and the machine.
"""

import hashlib
import json
import os
import subprocess
import tempfile

import pytest
import yaml

from lab.ansible_runner import OUTPUT_DIR

NAME = "inside"
SETTINGS = {"environment": {"systemPackages": {"__nix_raw__": "with pkgs; [ python3 ]"}}}
SIDECAR_VARS = {"sidecar_name": NAME, "sidecar_image_url": "{{ lab_image_url }}", "sidecar_image_checksum": "{{ lab_image_sha256 }}",
                "sidecar_nixos_settings": SETTINGS}


def provision(state="present"):
    return {"name": "sidecar %s" % state, "hosts": "sidecar_hosts", "gather_facts": False,
            "roles": [{"role": "nspawn.nixos.sidecar", "vars": dict(SIDECAR_VARS, sidecar_state=state)}]}


def plain(value):
    """A value of ansible-inventory's JSON without its marker of untrusted strings."""
    return value.get("__ansible_unsafe", value) if isinstance(value, dict) and set(value) == {"__ansible_unsafe"} else value


@pytest.fixture(scope="module")
def payload():
    """1 MiB of random bytes on the controller, and their sha256."""
    directory = tempfile.mkdtemp(prefix="inside-", dir=str(OUTPUT_DIR))
    path = os.path.join(directory, "payload.bin")
    data = os.urandom(1 << 20)
    with open(path, "wb") as handle:
        handle.write(data)
    return path, hashlib.sha256(data).hexdigest(), directory


@pytest.fixture(scope="module")
def sidecars(lab, ansible_runner):
    """The sidecar provisioned on every lab host; removed at the end."""
    run = ansible_runner.playbook([provision()])
    assert run.rc == 0, str(run)
    yield run
    gone = ansible_runner.playbook([provision("absent")])
    assert gone.rc == 0, str(gone)


def test_a_second_play_runs_tasks_inside(lab, ansible_runner, sidecars, payload):
    path, digest, directory = payload
    inside = {
        "name": "inside the sidecars", "hosts": "sidecar_%s" % NAME, "gather_facts": False,
        "tasks": [
            {"name": "raw os-release", "ansible.builtin.raw": "cat /etc/os-release", "register": "os_release"},
            {"name": "raw exit 3", "ansible.builtin.raw": "echo out; echo err >&2; exit 3", "register": "exit3", "ignore_errors": True},
            {"name": "raw stdin", "ansible.builtin.raw": "test ! -t 0 && echo no-tty", "register": "stdin"},
            {"name": "copy in", "ansible.builtin.copy": {"src": path, "dest": "/root/payload.bin", "mode": "0600"}, "register": "copied"},
            {"name": "copy in again", "ansible.builtin.copy": {"src": path, "dest": "/root/payload.bin", "mode": "0600"}, "register": "copied2"},
            {"name": "stat", "ansible.builtin.stat": {"path": "/root/payload.bin", "checksum_algorithm": "sha256"}, "register": "stat"},
            # without pipelining the module itself travels in as a file (put_file) and runs from a temporary directory
            {"name": "stat unpipelined", "ansible.builtin.stat": {"path": "/root/payload.bin", "checksum_algorithm": "sha256"},
             "vars": {"ansible_pipelining": False}, "register": "stat_unpipelined"},
            {"name": "fetch out", "ansible.builtin.fetch": {"src": "/root/payload.bin", "dest": directory + "/fetched/"}, "register": "fetched"},
            {"name": "whoami", "ansible.builtin.command": "id -un", "register": "whoami", "changed_when": False},
            {"name": "whoami become", "ansible.builtin.command": "id -un", "become": True, "become_user": "nobody",
             "register": "whoami_nobody", "changed_when": False},
            {"name": "facts", "ansible.builtin.setup": {"gather_subset": ["!all"]}, "register": "facts"},
        ],
    }
    run = ansible_runner.playbook([provision(), inside])
    assert run.rc == 0, str(run)
    for host in lab.hosts:
        sidecar = "%s-%s" % (host.name, NAME)
        assert "ID=nixos-fixture" in run.result("raw os-release", sidecar)["stdout"], run
        exit3 = run.result("raw exit 3", sidecar)
        assert exit3["rc"] == 3 and exit3["stdout"] == "out\n" and "err" in exit3["stderr"], exit3
        assert run.result("raw stdin", sidecar)["stdout"].strip() == "no-tty"
        assert run.result("copy in", sidecar)["changed"] and not run.result("copy in again", sidecar)["changed"]
        stat = run.result("stat", sidecar)["stat"]
        assert stat["checksum"] == digest and stat["size"] == 1 << 20 and stat["mode"] == "0600", stat
        assert run.result("stat unpipelined", sidecar)["stat"]["checksum"] == digest
        fetched = run.result("fetch out", sidecar)
        with open(fetched["dest"], "rb") as handle:
            assert hashlib.sha256(handle.read()).hexdigest() == digest
        assert run.result("whoami", sidecar)["stdout"] == "root"
        assert run.result("whoami become", sidecar)["stdout"] == "nobody"
        # The modules ran with the machine's Python (the one its NixOS configuration added), in the machine.
        facts = run.result("facts", sidecar)["ansible_facts"]
        assert facts["ansible_python"]["executable"] == "/run/current-system/sw/bin/python3", facts["ansible_python"]
        assert facts["ansible_distribution"] != "" and facts["ansible_hostname"] == "nixos", facts
        # The host's file system was not written: the payload is only inside the machine's tree.
        assert host.run(["test", "-e", "/root/payload.bin"]).returncode != 0


def test_the_inventory_plugin_builds_the_sidecars_without_connecting(lab, ansible_runner, sidecars, tmp_path):
    config = tmp_path / "sidecars.yml"
    config.write_text(yaml.safe_dump({"plugin": "nspawn.nixos.sidecars"}))
    env = ansible_runner.env()
    env["ANSIBLE_INVENTORY"] = "%s,%s" % (ansible_runner.inventory, config)
    bin_dir = ansible_runner.bin_dir
    listed = subprocess.run([str(bin_dir / "ansible-inventory"), "--list", "-e", "sidecar_name=%s" % NAME], env=env,
                            capture_output=True, text=True, check=False, timeout=120)
    assert listed.returncode == 0, listed.stderr
    inventory = json.loads(listed.stdout, object_hook=plain)
    # sidecar_name from the inventory only: the hosts' own sidecar_name is unset there, so the default nixos applies.
    names = sorted(inventory["sidecars"]["hosts"])
    assert names == sorted("%s-nixos" % host.name for host in lab.hosts), inventory["sidecars"]
    for host in lab.hosts:
        sidecar = "%s-nixos" % host.name
        hostvars = inventory["_meta"]["hostvars"][sidecar]
        assert hostvars["ansible_connection"] == "nspawn.nixos.machine" and hostvars["nspawn_machine"] == "nixos", hostvars
        assert hostvars["ansible_host"] == host.name and "ProxyCommand" in hostvars["ansible_ssh_common_args"], hostvars
        assert hostvars["ansible_python_interpreter"] == "/run/current-system/sw/bin/python3", hostvars
        # group names are kept as they are (ansible-core's default: TRANSFORM_INVALID_GROUP_CHARS=never)
        assert sidecar in inventory["sidecars_of_%s" % host.name]["hosts"], inventory.keys()
    assert sorted(inventory["sidecar_nixos"]["hosts"]) == names

    # With sidecar_name set for the hosts (as a group var would), the plugin's hosts reach the running sidecars.
    group_vars = tmp_path / "group_vars"
    group_vars.mkdir()
    (group_vars / "sidecar_hosts.yml").write_text(yaml.safe_dump({"sidecar_name": NAME}))
    inventory_dir = tmp_path / "inventory"
    inventory_dir.mkdir()
    os.symlink(str(ansible_runner.inventory), str(inventory_dir / "hosts.ini"))
    os.symlink(str(group_vars), str(inventory_dir / "group_vars"))
    (inventory_dir / "sidecars.yml").write_text(yaml.safe_dump({"plugin": "nspawn.nixos.sidecars", "use_vars_plugins": True}))
    env["ANSIBLE_INVENTORY"] = "%s,%s" % (inventory_dir / "hosts.ini", inventory_dir / "sidecars.yml")
    ran = subprocess.run([str(bin_dir / "ansible"), "sidecar_%s" % NAME, "-m", "ansible.builtin.raw", "-a", "cat /etc/hostname"],
                         env=env, capture_output=True, text=True, check=False, timeout=300)
    assert ran.returncode == 0, ran.stdout + ran.stderr
    for host in lab.hosts:
        assert "%s-%s | CHANGED | rc=0" % (host.name, NAME) in ran.stdout, ran.stdout


def test_a_stopped_machine_fails_with_one_line(lab, ansible_runner, sidecars):
    host = lab.hosts[0]
    sidecar = "%s-%s" % (host.name, NAME)
    stopped = host.run(["machinectl", "poweroff", NAME])
    assert stopped.returncode == 0, stopped
    try:
        host.run(["sh", "-c", "for i in $(seq 100); do machinectl show %s >/dev/null 2>&1 || exit 0; sleep 0.2; done; exit 1" % NAME],
                 check=True, timeout=60)
        reach = dict(ansible_connection="nspawn.nixos.machine", nspawn_machine=NAME, ansible_host=host.name, ansible_user="root",
                     ansible_ssh_common_args="{{ hostvars['%s'].ansible_ssh_common_args }}" % host.name,
                     ansible_ssh_private_key_file="{{ hostvars['%s'].ansible_ssh_private_key_file }}" % host.name)
        run = ansible_runner.playbook([
            {"name": "add", "hosts": "localhost", "gather_facts": False,
             "tasks": [{"name": "add", "ansible.builtin.add_host": dict(reach, name=sidecar)}]},
            {"name": "raw", "hosts": sidecar, "gather_facts": False, "tasks": [{"name": "raw true", "ansible.builtin.raw": "true"}]},
        ])
        record = run.results("raw true", sidecar)[-1]
        assert record["status"] == "unreachable", record
        message = record["result"]["msg"]
        # Ansible puts "Task failed: " before the connection's one line
        assert message.endswith("machine %s on host %s is missing or not running (Could not get path to machine: No machine '%s' known)"
                                % (NAME, host.name, NAME)), message
        assert "\n" not in message, message
    finally:
        host.run(["machinectl", "start", NAME])


def test_two_sidecars_on_one_host(lab, ansible_runner):
    """The role README's example: the role included once per machine; each gets its own image and settings,
    sidecar_status has an entry for each, and each is added to the run's inventory."""
    def include(name, state="present", **extra):
        return {"name": "sidecar %s" % name, "ansible.builtin.include_role": {"name": "nspawn.nixos.sidecar"},
                "vars": dict({"sidecar_name": name, "sidecar_state": state, "sidecar_image_url": "{{ lab_image_url }}",
                              "sidecar_image_checksum": "{{ lab_image_sha256 }}"}, **extra)}
    plays = [{"name": "two sidecars", "hosts": "sidecar_hosts", "gather_facts": False, "tasks": [
        include("two-a", sidecar_network="veth", sidecar_ports=["tcp:18080:80"]),
        include("two-b"),
    ]}, {"name": "both reachable", "hosts": "sidecars", "gather_facts": False,
         "tasks": [{"name": "hostname", "ansible.builtin.raw": "cat /etc/hostname", "register": "hostname"}]}]
    try:
        run = ansible_runner.playbook(plays)
        assert run.rc == 0, str(run)
        for host in lab.hosts:
            status = run.results("Record what the machine runs", host.name)[-1]["result"]["ansible_facts"]["sidecar_status"]
            assert sorted(status) == ["two-a", "two-b"] and all(item["state"] == "running" for item in status.values()), status
            for name in ("two-a", "two-b"):
                assert host.run(["test", "-f", "/etc/systemd/nspawn/%s.nspawn" % name]).returncode == 0
                assert run.result("hostname", "%s-%s" % (host.name, name))["rc"] == 0
            settings = host.run(["cat", "/etc/systemd/nspawn/two-a.nspawn"], check=True).stdout
            assert "Port=tcp:18080:80" in settings and "VirtualEthernet=no" not in settings, settings
    finally:
        gone = ansible_runner.playbook([{"name": "remove both", "hosts": "sidecar_hosts", "gather_facts": False,
                                         "tasks": [include("two-a", "absent"), include("two-b", "absent")]}])
        assert gone.rc == 0, str(gone)
