"""NixOS as the upstream images behave, through the role and site.yml, on every lab host.

The sidecar is the lab's FIXTURE image (tests/lab/fixture/README.md): Debian with the real nix
of Debian's packages, laid out like the upstream nspawn-nixos image (no flake.lock, a
registry pin of the nixpkgs it was built from, /etc/nixos files 0444), whose nixos-rebuild
is a test double. Which flavour of nixos-rebuild runs depends, as on NixOS, on the nixpkgs
the flake locks (nixos-rebuild re-executes itself from it): the lab's image server offers
three nixpkgs stand-ins as tarballs, one per flavour (bash script; early nixos-rebuild-ng
exiting 1; later nixos-rebuild-ng exiting with switch-to-configuration's status). Real
NixOS does not run here, and nothing below says it did.

- test_article_scenario_in_each_flavour: the article's nginx settings through the role with
  nixpkgs locked to each flavour's stand-in: a success with the specialfs warning whatever
  nixos-rebuild's exit status, a second run with changed=0; a failing unit fails the run,
  with the rollback, and the machine is back where it was.
- test_one_nixpkgs_for_the_fleet: site.yml on one host, later on the other: both lock the
  same nixpkgs (the image's, offline); an explicit upgrade on one host changes its lock;
  site.yml's fleet summary names the hosts that differ.

Everything is offline: the lab hosts have no network but their loopback.
"""

import json
import time

import pytest

from lab.ansible_runner import CHECKOUT

FLAVOURS = {
    # flavour: (nixos-rebuild's exit status for a specialfs-only failure, for failed units, switch_status seen, a line it prints)
    "bash": (1, 1, (None, None), "warning: error(s) occurred while switching to the new configuration"),
    "ng-early": (1, 1, (2, 4), "returned non-zero exit status 2"),
    "ng-late": (2, 4, (2, 4), None),
}
NGINX = {"services": {"nginx": {"enable": True, "virtualHosts": {"default": {"listen": [{"port": 9000, "addr": ""}]}}}}}
# The fixture's nixos-rebuild double fails a unit (fixture-fail.service) when the built configuration holds this marker.
FAILING = dict(NGINX, environment={"etc": {"nixos-fixture-fail-unit": {"text": "nixos-fixture-fail-unit\n"}}})
WRITE_TASK = "Write the NixOS configuration and run nixos-rebuild"
RECORD_TASK = "Record what the machine runs"
SITE = str(CHECKOUT / "playbooks" / "site.yml")


def sidecar_vars(name, **extra):
    values = {
        "sidecar_name": name,
        "sidecar_image_url": "{{ lab_image_url }}",
        "sidecar_image_checksum": "{{ lab_image_sha256 }}",
        "sidecar_nixos_settings": NGINX,
    }
    values.update(extra)
    return values


def role_play(name, **extra):
    return [{"name": "sidecar %s" % name, "hosts": "sidecar_hosts", "gather_facts": False,
             "roles": [{"role": "nspawn.nixos.sidecar", "vars": sidecar_vars(name, **extra)}]}]


def changed_tasks(result, host):
    return [record["task"] for record in result.tasks if record["host"] == host and record["status"] == "changed"]


def inside(lab_host, machine, *argv):
    done = lab_host.run(["systemd-run", "-M", machine, "--wait", "--pipe", "-q", "--collect"] + list(argv), check=True)
    return done.stdout


@pytest.mark.parametrize("flavour", sorted(FLAVOURS))
def test_article_scenario_in_each_flavour(flavour, lab, ansible_runner):
    ok_rc, fail_rc, (ok_status, fail_status), line = FLAVOURS[flavour]
    name = "flv-" + flavour
    nixpkgs = "http://127.0.0.1:8080/nixpkgs-fixture-%s.tar.gz" % flavour
    hosts = [host.name for host in lab.hosts]
    try:
        first = ansible_runner.playbook(role_play(name, sidecar_nixpkgs=nixpkgs))
        assert first.rc == 0 and not first.failed, str(first)
        for host in hosts:
            written = first.result(WRITE_TASK, host)
            rebuild = written["rebuild"]
            assert written["changed"] and written["actions"] == ["write", "add_import", "lock", "rebuild"], written
            assert rebuild["rc"] == ok_rc and rebuild["switch_status"] == ok_status, rebuild
            assert rebuild["failed_snippets"] == ["specialfs"] and rebuild["failed_units"] == [], rebuild
            assert line is None or line in rebuild["stdout"] + rebuild["stderr"], rebuild
            assert any("only the activation snippet specialfs failed" in warning for warning in written["warnings"]), written
            # The lock names the flavour's tarball, so nixos-rebuild ran from that nixpkgs.
            assert written["nixpkgs"]["type"] == "tarball" and written["nixpkgs"]["url"] == nixpkgs, written["nixpkgs"]
            status = first.result(RECORD_TASK, host)["ansible_facts"]["sidecar_status"][name]
            assert status["state"] == "running" and status["nixpkgs"] == written["nixpkgs"]["id"], status
            assert status["system"] == written["system"] and status["generation"] == 1, (status, written)

        second = ansible_runner.playbook(role_play(name, sidecar_nixpkgs=nixpkgs))
        assert second.rc == 0, str(second)
        for host in hosts:
            assert second.stats[host]["changed"] == 0, (changed_tasks(second, host), str(second))

        failing = ansible_runner.playbook(role_play(name, sidecar_nixpkgs=nixpkgs, sidecar_nixos_settings=FAILING))
        assert failing.rc != 0, str(failing)
        for host in hosts:
            record = failing.results(WRITE_TASK, host)[-1]
            result = record["result"]
            assert record["status"] == "failed", record
            assert result["rebuild"]["rc"] == fail_rc and result["rebuild"]["switch_status"] == fail_status, result["rebuild"]
            assert result["rebuild"]["failed_units"] == ["fixture-fail.service"], result["rebuild"]
            assert "failed units: fixture-fail.service" in result["msg"], result["msg"]
            assert "Rolled back to the previous generation" in result["msg"] and result["rebuild"]["rolled_back"], result["msg"]
            assert result["actions"] == ["write", "rebuild", "rollback", "restore"], result

        # Back where it was: the same system, and the good settings are a no-op again.
        back = ansible_runner.playbook(role_play(name, sidecar_nixpkgs=nixpkgs))
        assert back.rc == 0, str(back)
        for host in hosts:
            assert back.stats[host]["changed"] == 0, (changed_tasks(back, host), str(back))
            status = back.result(RECORD_TASK, host)["ansible_facts"]["sidecar_status"][name]
            assert status["system"] == first.result(RECORD_TASK, host)["ansible_facts"]["sidecar_status"][name]["system"]
    finally:
        gone = ansible_runner.playbook(role_play(name, sidecar_state="absent"))
        assert gone.rc == 0, str(gone)


def test_one_nixpkgs_for_the_fleet(lab, ansible_runner):
    if len(lab.hosts) < 2:
        pytest.skip("needs two lab hosts (NSPAWN_LAB_RELEASES limits the lab to %s)" % [host.name for host in lab.hosts])
    first_host, second_host = lab.hosts[0], lab.hosts[1]
    both = "%s,%s" % (first_host.name, second_host.name)  # a matrix lab has more hosts: this fleet is these two
    name = "fleet"
    extra = {"sidecar_name": name, "sidecar_image_url": "{{ lab_image_url }}", "sidecar_image_checksum": "{{ lab_image_sha256 }}",
             "sidecar_nixos_settings": NGINX}
    ids = {}
    try:
        for host in (first_host, second_host):  # one after the other: converged at different times
            run = ansible_runner.playbook(SITE, limit=host.name, extra_vars=extra)
            assert run.rc == 0, str(run)
            written = run.result(WRITE_TASK, host.name)
            assert written["nixpkgs"]["type"] == "path", written["nixpkgs"]
            # The lock is the image's registry pin, read in the machine.
            registry = json.loads(inside(host, name, "/bin/sh", "-c", "cat /etc/nix/registry.json"))
            pin = [entry["to"] for entry in registry["flakes"] if entry["from"].get("id") == "nixpkgs"][0]
            assert written["nixpkgs"]["path"] == pin["path"], (written["nixpkgs"], pin)
            lock = json.loads(host.run(["cat", "/var/lib/machines/%s/etc/nixos/flake.lock" % name], check=True).stdout)
            assert lock["nodes"]["nixpkgs"]["original"]["ref"] == "nixos-unstable", lock  # the flake's own input, kept
            ids[host.name] = run.result(RECORD_TASK, host.name)["ansible_facts"]["sidecar_status"][name]["nixpkgs"]
            time.sleep(2)
        assert ids[first_host.name] == ids[second_host.name], ids

        # A second site.yml run on both: nothing changes, and the summary says they agree.
        again = ansible_runner.playbook(SITE, limit=both, extra_vars=extra)
        assert again.rc == 0, str(again)
        for host in (first_host, second_host):
            assert again.stats[host.name]["changed"] == 0, (changed_tasks(again, host.name), str(again))
        assert "nixpkgs: the same on all 2 sidecars: %s" % ids[first_host.name] in again.stdout, again

        # An explicit upgrade of one host: its lock (and system) change.
        upgrade = dict(extra, sidecar_nixpkgs="http://127.0.0.1:8080/nixpkgs-fixture-ng-late.tar.gz")
        upgraded = ansible_runner.playbook(SITE, limit=first_host.name, extra_vars=upgrade)
        assert upgraded.rc == 0, str(upgraded)
        written = upgraded.result(WRITE_TASK, first_host.name)
        assert written["actions"] == ["lock", "rebuild"] and written["nixpkgs"]["id"] != ids[first_host.name], written

        # The summary of both names the one that differs (sidecar_nixpkgs: unmanaged keeps both locks as they are).
        summary = ansible_runner.playbook(SITE, limit=both, extra_vars=dict(extra, sidecar_nixpkgs="unmanaged"))
        assert summary.rc == 0, str(summary)
        assert "nixpkgs: 2 different values" in summary.stdout, summary
        assert "%s/%s" % (first_host.name, name) in summary.stdout and written["nixpkgs"]["id"] in summary.stdout, summary
    finally:
        gone = ansible_runner.playbook(SITE, limit=both, extra_vars=dict(extra, sidecar_state="absent"))
        assert gone.rc == 0, str(gone)
