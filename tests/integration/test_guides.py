"""The docs site's scenario guides (docs/docsite/rst/guide_*.rst): their playbooks, run on a lab host.

The guides show these files with literalinclude (docs/docsite/playbooks/), so the file a test
runs is the file a reader sees. What the tests change: the image is the lab's FIXTURE (its URL
and sha256 as extra vars, over the guides' upstream or mirror URLs), and the nixpkgs references
are the lab's nixpkgs stand-ins; no real NixOS runs here. One Debian 13 host runs them all, one
after the other, to keep the time small:

- air-gapped: the playbook as shown (zeros as the pin) fails on the controller, nothing reaches
  the host; with the image's real sha256 the controller's copy is imported, the host downloads nothing;
- selinux: method download on a host without SELinux (the lab has none: SELinux itself is not tested);
- article: the article's manual steps as group_vars + site.yml: .nspawn, running, enabled,
  configuration.nix importing the settings, a second run changes nothing;
- awx: the job template's extra variables with nspawn.nixos.site (no AWX, no execution environment here);
- nixpkgs: one nixpkgs for the fleet, then an upgrade on purpose by changing it;
- inside: tasks inside the sidecar, by the role's groups and by the inventory plugin;
- several: two sidecars on one host, then both removed.
"""

import json
import os
import subprocess

import pytest
import yaml

from lab.ansible_runner import CHECKOUT, AnsibleRunner

PLAYBOOKS = CHECKOUT / "docs" / "docsite" / "playbooks"
FIXTURE_IMAGE = {"sidecar_image_url": "{{ lab_image_url }}", "sidecar_image_checksum": "{{ lab_image_sha256 }}"}
NIXPKGS = "http://127.0.0.1:8080/nixpkgs-fixture-%s.tar.gz"  # the lab's nixpkgs stand-ins (tests/lab/fixture)
WRITE_TASK = "Write the NixOS configuration and run nixos-rebuild"
RECORD_TASK = "Record what the machine runs"

pytestmark = pytest.mark.lab_releases("13")


def loaded(name):
    return yaml.safe_load((PLAYBOOKS / name).read_text())


def ok(run):
    assert run.rc == 0 and not run.failed, str(run)
    return run


def inventory_with(lab, tmp_path, group_vars):
    """A runner whose inventory is a directory: the lab's hosts and host_vars, and a guide's group_vars."""
    directory = tmp_path / "inventory"
    directory.mkdir()
    os.symlink(str(lab.inventory), str(directory / "hosts.ini"))
    os.symlink(str(lab.inventory.parent / "host_vars"), str(directory / "host_vars"))
    os.symlink(str(group_vars), str(directory / "group_vars"))
    return AnsibleRunner(directory)


def machine_state(host, name):
    done = host.run(["machinectl", "show", name, "-p", "State", "--value"])
    return done.stdout.strip() if done.returncode == 0 else None


def status(run, host, name):
    return run.result(RECORD_TASK, host.name)["ansible_facts"]["sidecar_status"][name]


def remove(ansible_runner, host, *names):
    for name in names:
        ok(ansible_runner.playbook([{"name": "remove %s" % name, "hosts": host.name, "gather_facts": False,
                                     "roles": [{"role": "nspawn.nixos.sidecar", "vars": {"sidecar_name": name, "sidecar_state": "absent"}}]}]))


def test_air_gapped(lab, lab_host, ansible_runner):
    image = lab.images["files"]["nixos-fixture-x86_64-linux.tar.xz"]
    url = "file://%s/nixos-fixture-x86_64-linux.tar.xz" % lab.images["directory"]  # as an internal mirror would serve it
    playbook = str(PLAYBOOKS / "air_gapped.yml")
    try:
        # The shown pin (zeros) is not the image's: the controller refuses it, the host gets nothing.
        wrong = ansible_runner.playbook(playbook, limit=lab_host.name, extra_vars={"sidecar_image_url": url})
        assert wrong.rc != 0, str(wrong)
        failed = [record for record in wrong.failed if record["host"] in (lab_host.name, "localhost")]
        assert failed and failed[0]["task"].endswith("Download and verify the image on the controller"), [r["task"] for r in wrong.failed]
        assert "checksum" in json.dumps(failed[0]["result"]).lower(), failed[0]["result"]
        assert lab_host.run(["test", "-e", "/var/lib/machines/nixos"]).returncode != 0
        assert machine_state(lab_host, "nixos") is None

        pinned = ok(ansible_runner.playbook(playbook, limit=lab_host.name,
                                            extra_vars={"sidecar_image_url": url, "sidecar_image_checksum": "sha256:" + image["sha256"]}))
        assert pinned.results("Copy the image to the host", lab_host.name)[-1]["status"] == "changed"
        assert pinned.results("Verify and import the copy", lab_host.name)[-1]["status"] == "changed"
        # the host-side download never ran
        assert all(record["status"] == "skipped" for record in pinned.results("Fetch, verify and import the image", lab_host.name))
        assert machine_state(lab_host, "nixos") == "running"
        assert status(pinned, lab_host, "nixos")["state"] == "running"
    finally:
        remove(ansible_runner, lab_host, "nixos")


def test_selinux_download_method(lab_host, ansible_runner):
    run = ok(ansible_runner.playbook(str(PLAYBOOKS / "selinux.yml"), limit=lab_host.name, extra_vars=FIXTURE_IMAGE))
    assert run.result("Show it", lab_host.name)["msg"].startswith("SELinux: disabled") or \
        run.result("Show it", lab_host.name)["msg"].startswith("SELinux: absent"), run.result("Show it", lab_host.name)
    fetched = run.result("Fetch, verify and import the image", lab_host.name)
    assert fetched["changed"] and fetched["actions"][0] == "download" and fetched["origin"]["method"] == "download", fetched
    assert machine_state(lab_host, "nixos") == "running"
    # The article's sidecar below is this one, with the article's settings (the image stays).


def test_article_to_site_yml(lab, lab_host, tmp_path):
    playbook = str(PLAYBOOKS / "article" / "site.yml")
    ansible_runner = inventory_with(lab, tmp_path, PLAYBOOKS / "article" / "group_vars")
    first = ok(ansible_runner.playbook(playbook, limit=lab_host.name, extra_vars=FIXTURE_IMAGE))
    settings = lab_host.run(["cat", "/etc/systemd/nspawn/nixos.nspawn"], check=True).stdout
    assert "VirtualEthernet=no" in settings and "Bind=/srv/nixos-shared:/shared" in settings, settings
    assert machine_state(lab_host, "nixos") == "running"
    assert lab_host.run(["systemctl", "is-enabled", "systemd-nspawn@nixos.service"]).stdout.strip() == "enabled"
    root = "/var/lib/machines/nixos/etc/nixos/"
    assert "ansible.nix" in lab_host.run(["cat", root + "configuration.nix"], check=True).stdout
    assert "nginx" in lab_host.run(["cat", root + "ansible.nix"], check=True).stdout
    written = first.result(WRITE_TASK, lab_host.name)
    assert written["changed"] and "rebuild" in written["actions"], written
    assert status(first, lab_host, "nixos")["generation"] >= 1
    # The bind is live: a file the host writes is seen inside the machine.
    lab_host.run(["sh", "-c", "echo from-the-host > /srv/nixos-shared/hello"], check=True)
    inside = lab_host.run(["systemd-run", "-M", "nixos", "--wait", "--pipe", "-q", "--collect", "/bin/sh", "-c", "cat /shared/hello"])
    assert inside.stdout.strip() == "from-the-host", inside
    again = ok(ansible_runner.playbook(playbook, limit=lab_host.name, extra_vars=FIXTURE_IMAGE))
    assert again.stats[lab_host.name]["changed"] == 0, again.stats


def test_awx_extra_vars(lab_host, ansible_runner):
    extra = dict(loaded("awx_extra_vars.yml"), **FIXTURE_IMAGE)
    run = ok(ansible_runner.playbook("nspawn.nixos.site", limit=lab_host.name, extra_vars=extra))
    assert status(run, lab_host, "nixos")["state"] == "running"
    assert "nixos" in run.stdout and "NixOS sidecar fleet summary" in run.stdout


def test_one_nixpkgs_then_an_upgrade(lab, lab_host, tmp_path):
    playbook = "nspawn.nixos.site"
    ansible_runner = inventory_with(lab, tmp_path, PLAYBOOKS / "nixpkgs" / "group_vars")
    assert loaded("nixpkgs/group_vars/sidecar_hosts.yml")["sidecar_nixpkgs_update"] is False
    lock_path = "/var/lib/machines/nixos/etc/nixos/flake.lock"
    ids = []
    for flavour in ("ng-early", "ng-late"):  # the pin, then the upgrade on purpose
        run = ok(ansible_runner.playbook(playbook, limit=lab_host.name, extra_vars=dict(FIXTURE_IMAGE, sidecar_nixpkgs=NIXPKGS % flavour)))
        written = run.result(WRITE_TASK, lab_host.name)
        assert "lock" in written["actions"] and "rebuild" in written["actions"], written
        assert written["nixpkgs"]["url"] == NIXPKGS % flavour, written["nixpkgs"]
        lock = json.loads(lab_host.run(["cat", lock_path], check=True).stdout)
        assert lock["nodes"]["nixpkgs"]["locked"]["url"] == NIXPKGS % flavour, lock["nodes"]["nixpkgs"]
        assert "nixpkgs: the same on all 1 sidecars: %s" % written["nixpkgs"]["id"] in run.stdout, run.stdout[-3000:]
        ids.append(written["nixpkgs"]["id"])
    assert ids[0] != ids[1]  # (a second run with the same reference changing nothing: test_article_to_site_yml)


def test_inside_a_sidecar(lab, lab_host, ansible_runner):
    run = ok(ansible_runner.playbook(str(PLAYBOOKS / "inside.yml"), limit="%s,%s-nixos" % (lab_host.name, lab_host.name), extra_vars=FIXTURE_IMAGE))
    sidecar = "%s-nixos" % lab_host.name
    assert "NixOS" in run.result("Without Python", sidecar)["stdout"]
    assert run.result("A command", sidecar)["stdout"] == "root"
    readme = lab_host.run(["cat", "/var/lib/machines/nixos/root/README"], check=True).stdout
    assert readme == "This sidecar is managed by Ansible.\n"

    # The inventory plugin: the same sidecar from the inventory alone, without provisioning.
    by_plugin = AnsibleRunner("%s,%s" % (lab.inventory, PLAYBOOKS / "sidecars.yml"))
    inventory = json.loads(subprocess.run([str(by_plugin.bin_dir / "ansible-inventory"), "--list"], env=by_plugin.env(),
                                          capture_output=True, text=True, check=True, cwd=str(CHECKOUT / "tests")).stdout)
    assert sidecar in inventory["sidecar_nixos"]["hosts"], inventory.get("sidecar_nixos")
    again = ok(by_plugin.playbook(str(PLAYBOOKS / "inside_only.yml"), limit=sidecar))
    assert "NixOS" in again.result("Which NixOS", sidecar)["stdout"]
    remove(ansible_runner, lab_host, "nixos")


def test_several_sidecars(lab_host, ansible_runner):
    playbook = str(PLAYBOOKS / "several.yml")
    try:
        run = ok(ansible_runner.playbook(playbook, limit=lab_host.name, extra_vars=FIXTURE_IMAGE))
        for name in ("web", "tools"):
            assert machine_state(lab_host, name) == "running", name
        web = lab_host.run(["cat", "/etc/systemd/nspawn/web.nspawn"], check=True).stdout
        tools = lab_host.run(["cat", "/etc/systemd/nspawn/tools.nspawn"], check=True).stdout
        assert "Bind=/srv/web:/srv/web" in web and "Bind=" not in tools, (web, tools)
        assert "jq" in lab_host.run(["cat", "/var/lib/machines/tools/etc/nixos/ansible.nix"], check=True).stdout
        sidecars = run.results(RECORD_TASK, lab_host.name)[-1]["result"]["ansible_facts"]["sidecar_status"]
        assert {"web", "tools"} <= set(sidecars), sidecars
    finally:
        ok(ansible_runner.playbook(playbook, limit=lab_host.name, extra_vars=dict(FIXTURE_IMAGE, sidecar_state="absent")))
    for name in ("web", "tools"):
        assert machine_state(lab_host, name) is None, name
        assert lab_host.run(["test", "-e", "/var/lib/machines/%s" % name]).returncode != 0
