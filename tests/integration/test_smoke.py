"""Smoke test of the lab, on every release: Ansible reaches the host over real SSH, facts
say systemd, and the machinectl/importctl steps of a sidecar work inside it
(tests/integration/targets/smoke)."""

import shlex
from pathlib import Path

import yaml

ROLE_VARS = Path(__file__).resolve().parents[2] / "roles" / "sidecar" / "vars" / "main.yml"
PULL_TASKS = ("Pull the fixture image with importctl (systemd >= 256)", "Pull the fixture image with machinectl (systemd < 256)")


def test_smoke(lab_host, ansible_runner):
    result = ansible_runner.run_target("smoke", limit=lab_host.name)

    assert result.rc == 0, result
    assert not result.failed, result
    assert result.stats[lab_host.name]["failures"] == 0, result
    facts = result.result("Gathering Facts", lab_host.name)["ansible_facts"]
    assert facts["ansible_service_mgr"] == "systemd"
    assert facts["ansible_hostname"] == lab_host.name
    assert facts["ansible_distribution"] == "Debian"
    if lab_host.release.major:
        assert facts["ansible_distribution_major_version"] == lab_host.release.major
    else:  # Debian unstable: "<next codename>/sid" ("forky/sid" when measured)
        assert facts["ansible_distribution_major_version"].endswith("/sid"), facts["ansible_distribution_major_version"]
    assert result.result("Remember whether importd is installed", lab_host.name)["ansible_facts"]["smoke_importd"] == lab_host.importd
    assert result.result("Run a command that exits 3 in the machine", lab_host.name)["rc"] == 3
    pulled_with = {record["result"]["cmd"][0] for task in PULL_TASKS for record in result.results(task, lab_host.name)
                   if record["status"] == "changed"}
    if lab_host.importd:
        assert pulled_with == ({"importctl"} if lab_host.systemd_version >= 256 else {"machinectl"})
    else:
        # No importd: machinectl pull-tar failed for want of it, the image was unpacked by hand.
        assert pulled_with == set()
        assert "org.freedesktop.import1" in result.result("Try to pull with machinectl where importd is missing", lab_host.name)["stderr"]
        assert result.result("Unpack the fixture image into the image store where importd is missing", lab_host.name)["changed"]


def test_probe_agrees_with_fact_gathering(lab_host, ansible_runner):
    """The sidecar role's raw probe (roles/sidecar/vars/main.yml, read by the filter nspawn.nixos.sidecar_host) gives
    the facts the role used to gather with setup, on every release: the same architecture, OS family, service manager,
    systemd version and SELinux state as Ansible's own collectors, and machinectl where the host has it."""
    probe = yaml.safe_load(ROLE_VARS.read_text())["_sidecar_probe_script"]
    facts_subset = ["!all", "!min", "distribution", "platform", "selinux", "service_mgr", "systemd"]
    raw = ("sh -c %s sh no-such-machine /var/lib/machines /var/lib/nspawn-nixos/origin /var/lib/nspawn-nixos/pending "
           "/etc/systemd/nspawn /etc/nixos/ansible.nix" % shlex.quote(probe))
    plays = [{"name": "probe", "hosts": lab_host.name, "gather_facts": False, "tasks": [
        {"name": "Gather facts", "ansible.builtin.setup": {"gather_subset": facts_subset}},
        {"name": "Probe", "ansible.builtin.raw": raw, "register": "probe", "changed_when": False},
        {"name": "Read the probe", "ansible.builtin.set_fact": {"host": "{{ probe.stdout | nspawn.nixos.sidecar_host }}"}},
    ]}]
    result = ansible_runner.playbook(plays, limit=lab_host.name)
    assert result.rc == 0 and not result.failed, result
    facts = result.result("Gather facts", lab_host.name)["ansible_facts"]
    host = result.result("Read the probe", lab_host.name)["ansible_facts"]["host"]
    assert host["architecture"] == facts["ansible_architecture"]
    assert host["os_family"] == facts["ansible_os_family"] == "Debian"
    assert host["service_mgr"] == facts["ansible_service_mgr"] == "systemd"
    assert host["systemd_version"] == int(facts["ansible_systemd"]["version"]) == lab_host.systemd_version
    assert host["os_release"]["ID"] == "debian" and host["distribution"] == "Debian GNU/Linux"
    # No SELinux in the lab: setup says so when its Python bindings are missing too; the probe reads selinuxfs.
    assert host["selinux"] == "disabled"
    assert facts["ansible_selinux"] in (False, {"status": "disabled"}) or facts["ansible_selinux"].get("status") != "enabled"
    assert host["machinectl"] is True
    assert (host["image"], host["pending"], host["origin"], host["settings"]) == (False, False, None, None)
