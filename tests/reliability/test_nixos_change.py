"""nixos_config where a careless user or a bad moment cuts a change short, on real systemd with the FIXTURE image.

One sidecar per lab host (the role, fixture image), then:

- a rebuild cut off: the host kills the module (SIGKILL, as the OOM killer does) while its nixos-rebuild runs in
  the machine. The pending record written before the first file stays; the next run finds the files as wanted and
  still rebuilds (resumed), the run after it has nothing to do. Before the fix the next run reported ok, nothing to
  do, and the machine kept the old system;
- an ephemeral machine (systemd.nspawn(5) Ephemeral=yes): nixos_config refuses, naming the cause, and writes nothing
  into the image, which the running snapshot would not see. Before the fix it wrote into the image and ran
  nixos-rebuild in the snapshot.
"""

import threading

import pytest

from faults.harness import on_hosts, provisioned, tasks_play

NAME = "chg"
PENDING = "/var/lib/nspawn-nixos/nixos-pending/%s.json" % NAME
MODULE = "/var/lib/machines/%s/etc/nixos/ansible.nix" % NAME
# On the host: wait for nixos-rebuild in the machine (its systemd-run client, started by the module), then SIGKILL
# the module, the client's parent. Prints what it killed, or "no rebuild" after about a minute.
KILLER = (
    "for i in $(seq 1 3000); do "
    "pid=$(pgrep -o -f '[s]ystemd-run -M %s .*nixos-rebuild'); "  # [s]: not this shell's own command line
    "if [ -n \"$pid\" ]; then parent=$(ps -o ppid= -p \"$pid\" | tr -d ' '); "
    "case $(ps -o comm= -p \"$parent\") in python*) kill -KILL \"$parent\" && echo \"killed $parent\" && exit 0;; esac; fi; "
    "sleep 0.02; done; echo 'no rebuild'; exit 1" % NAME)


def configure(text, name="configure", **extra):
    task = {"name": name, "nspawn.nixos.nixos_config": {
        "name": NAME, "settings": {"environment": {"etc": {"chg-test": {"text": text}}}}, "timeout": 300}}
    task.update(extra)
    return task


@pytest.fixture(scope="module")
def sidecars(lab, ansible_runner):
    with provisioned(ansible_runner, NAME) as run:
        yield run
    left = on_hosts(lab, lambda host: host.run(["sh", "-c", "ls %s 2>/dev/null; true" % PENDING]).stdout)
    assert not any(left.values()), "the pending record outlived its machine: %s" % left


def test_rebuild_cut_off_is_finished_by_the_next_run(lab, ansible_runner, sidecars):
    killers = {}

    def kill(host):
        killers[host.name] = host.run(["sh", "-c", KILLER], timeout=300)

    threads = [threading.Thread(target=kill, args=(host,)) for host in lab.hosts]
    for thread in threads:
        thread.start()
    cut = ansible_runner.playbook([tasks_play("cut off", [configure("one\n", ignore_errors=True)])])
    for thread in threads:
        thread.join(120)
    assert cut.rc == 0, str(cut)
    records = on_hosts(lab, lambda host: host.run(["cat", PENDING]))
    for host in lab.hosts:
        assert killers[host.name].stdout.startswith("killed"), (host.name, killers[host.name].stdout, str(cut))
        assert cut.results("configure", host.name)[-1]["status"] == "failed", "the module was not killed on %s" % host.name
        assert records[host.name].returncode == 0, "no pending record after the kill on %s" % host.name
        assert '"/etc/nixos/ansible.nix"' in records[host.name].stdout, records[host.name].stdout

    again = ansible_runner.playbook([tasks_play("after the kill", [configure("one\n", "again"), configure("one\n", "third")])])
    assert again.rc == 0, str(again)
    gone = on_hosts(lab, lambda host: host.run(["test", "-e", PENDING]).returncode)
    for host in lab.hosts:
        resumed, third = again.result("again", host.name), again.result("third", host.name)
        assert (resumed["changed"], resumed["resumed"], resumed["actions"]) == (True, True, ["rebuild"]), resumed
        assert resumed["rebuild"]["activated"] is not False and resumed["files"] == [], resumed["rebuild"]
        assert gone[host.name] != 0, "the pending record stayed after the resumed rebuild on %s" % host.name
        assert (third["changed"], third["resumed"], third["actions"]) == (False, False, []), third


def test_ephemeral_machine_is_refused_and_nothing_written(lab, ansible_runner, sidecars):
    before = on_hosts(lab, lambda host: host.run(["cat", MODULE]).stdout)
    run = ansible_runner.playbook([tasks_play("ephemeral", [
        {"name": "make it ephemeral", "nspawn.nixos.nspawn_settings": {"name": NAME, "settings": {"Exec": {"Ephemeral": True}}}},
        {"name": "restart it", "nspawn.nixos.nspawn_machine": {"name": NAME, "state": "restarted"}},
        {"name": "where it runs from", "ansible.builtin.command": "machinectl show %s -p RootDirectory --value" % NAME,
         "register": "root", "changed_when": False},
        configure("ephemeral\n", ignore_errors=True),
        {"name": "not ephemeral again", "nspawn.nixos.nspawn_settings": {"name": NAME, "settings": {"Exec": {"Ephemeral": False}}}},
        {"name": "restart it from its image", "nspawn.nixos.nspawn_machine": {"name": NAME, "state": "restarted"}},
    ])])
    assert run.rc == 0, str(run)
    after = on_hosts(lab, lambda host: host.run(["cat", MODULE]).stdout)
    for host in lab.hosts:
        root = run.result("where it runs from", host.name)["stdout"].strip()
        assert root != "/var/lib/machines/%s" % NAME, "machined reports the image as the root of an ephemeral machine: %s" % root
        record = run.results("configure", host.name)[-1]
        refused = record["result"]
        assert record["status"] == "failed" and "runs from %s, not from its image" % root in refused["msg"], refused
        assert "nothing was written" in refused["msg"] and refused["actions"] == [], refused
        assert after[host.name] == before[host.name], "the image's %s changed on %s" % (MODULE, host.name)
