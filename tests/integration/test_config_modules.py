"""Integration targets of the configuration modules (tests/integration/targets/nspawn_settings,
nixos_config, nspawn_info) on every lab host, over real SSH.

Each target runs once per session on all lab hosts at the same time (one ansible-playbook,
one fork per host); the tests, parametrized over target x lab_host, then judge each host's
part from the JSON results: no failed task, every case's "<case> | check N" predicted what
"<case> | real N" did (changed and actions), and "<case> | real 2" changed nothing.

nixos_config runs with -v and a root password hash made here for the session: the hash
must not appear anywhere in what ansible-playbook printed or returned.

Every target removes its machines and images at the end (and what an interrupted run left
at its start), so the targets run in any order; the tests check that nothing is left.
"""

import json
import secrets
import shutil
import subprocess
import sys

import pytest
import yaml

from runner import TARGETS_DIR, case_steps, check_case_pattern, collections_path, task_name

TARGETS = ("nspawn_settings", "nixos_config", "nspawn_info")
# The machines and images each target creates (its defaults).
TARGET_MACHINES = {
    "nspawn_settings": ("ns-set",),
    "nixos_config": ("nixcfg",),
    "nspawn_info": ("info-run", "info-stop"),
}
NO_LOG_PLACEHOLDER = "VALUE_SPECIFIED_IN_NO_LOG_PARAMETER"


def sha512_crypt_hash():
    """A fresh SHA-512 crypt(3) hash of a random password, made on the controller."""
    password = secrets.token_urlsafe(18)
    if shutil.which("openssl"):
        done = subprocess.run(["openssl", "passwd", "-6", "-stdin"], input=password + "\n", capture_output=True, text=True, check=True)
        return done.stdout.strip()
    # The crypt module is gone from Python 3.13; openssl is the usual way.
    import crypt  # pylint: disable=deprecated-module,import-outside-toplevel
    return crypt.crypt(password, crypt.mksalt(crypt.METHOD_SHA512))


class TargetRun:
    """The playbook result of one target on every lab host."""

    def __init__(self, target, result, secret=None):
        self.target = target
        self.result = result
        self.secret = secret

    def records(self, host):
        return [record for record in self.result.tasks if record["host"] == host]

    def record(self, task, host):
        """The record (status, result, ...) of the last run of a task (name without the role prefix) on host."""
        matches = [record for record in self.records(host) if task_name(record) == task]
        if not matches:
            raise KeyError("no task %r on %s in %s" % (task, host, self.target))
        return matches[-1]

    def get(self, task, host):
        """The result dict of the last run of a task on host."""
        return self.record(task, host)["result"]

    def explain(self, host):
        lines = ["target %s on %s: playbook rc=%d in %.1f s" % (self.target, host, self.result.rc, self.result.seconds)]
        for record in self.records(host):
            if record["status"] in ("failed", "unreachable") and not record["ignored"]:
                lines.append("FAILED task %r:\n%s" % (record["task"], json.dumps(record["result"], indent=1, default=str)[-6000:]))
        text = str(self.result)
        lines.append(text.replace(self.secret, "<the hash>") if self.secret else text)
        return "\n".join(lines)


_RUNS = {}


@pytest.fixture(scope="session")
def config_target_run(ansible_runner):
    """target -> TargetRun, each target run once per session on all lab hosts."""

    def run(target):
        if target not in _RUNS:
            if target == "nixos_config":
                secret = sha512_crypt_hash()
                result = ansible_runner.run_target(target, gather_facts=False, verbosity=1,
                                                   extra_vars={"nixos_config_root_hash": secret})
                _RUNS[target] = TargetRun(target, result, secret)
            else:
                _RUNS[target] = TargetRun(target, ansible_runner.run_target(target, gather_facts=False))
        return _RUNS[target]

    return run


@pytest.mark.parametrize("target", TARGETS)
def test_config_target(target, lab_host, config_target_run, capsys):
    run = config_target_run(target)
    host = lab_host.name

    assert host in run.result.stats, run.explain(host)
    assert run.result.stats[host]["failures"] == 0 and run.result.stats[host]["unreachable"] == 0, run.explain(host)
    failed = [record for record in run.records(host) if record["status"] in ("failed", "unreachable") and not record["ignored"]]
    assert not failed, run.explain(host)
    # The playbook ran on every host: rc 2 is a failed task on another host (judged there).
    others_failed = any(stats["failures"] for name, stats in run.result.stats.items() if name != host)
    assert run.result.rc == 0 or (run.result.rc == 2 and others_failed), run.explain(host)

    # The cases of the pattern: those with check or real steps (not the setup and cleanup around them).
    cases = dict((case, steps) for case, steps in case_steps(run.records(host)).items()
                 if any(step.startswith(("check", "real")) for step in steps))
    check_case_pattern(cases, lambda: run.explain(host))
    {"nspawn_settings": _check_settings, "nixos_config": _check_nixos_config, "nspawn_info": _check_info}[target](run, host)
    _check_cleaned_up(target, lab_host)

    records = run.records(host)
    asserts = [record for record in records if record["action"] == "ansible.builtin.assert"]
    conditions = _assert_conditions(target)
    checked = sum(len(record["result"].get("results") or [None]) * conditions[task_name(record)] for record in asserts)
    module_calls = sum(len(record["result"].get("results") or [None]) for record in records if record["action"].startswith("nspawn.nixos."))
    with capsys.disabled():
        print("\n%s on %s (systemd %s): %d cases, %d assert tasks with %d conditions passed, %d module calls, %d tasks, %.1f s for all hosts"
              % (target, host, lab_host.systemd_version, len(cases), len(asserts), checked, module_calls, len(records), run.result.seconds))


def _assert_conditions(target):
    """Task name -> number of conditions of each assert task of the target (a looped one checks them per item)."""
    counts = {}
    for path in sorted((TARGETS_DIR / target / "tasks").glob("*.yml")):
        for task in yaml.safe_load(path.read_text()) or []:
            if "ansible.builtin.assert" in task:
                counts[task["name"]] = len(task["ansible.builtin.assert"]["that"])
    return counts


def _check_settings(run, host):
    applied = run.get("Apply | real 1", host)
    assert applied["changed"] and applied["restart_required"], applied
    assert applied["settings"]["Network"] == {"VirtualEthernet": ["no"]}, applied
    assert run.get("Restart | reboot the machine, as restart_required asked", host)["changed"]
    assert run.get("Restart | try to write through the read-only bind, inside the machine", host)["stdout"] == "READ-ONLY"
    bad = [item for task in ("Bad input | check", "Bad input | real") for item in run.get(task, host)["results"]]
    assert bad and all(item["failed"] and item["msg"].startswith(item["item"]["option"] + ": ") for item in bad), bad
    backup = run.get("Backup | real 1", host)
    assert backup["backup_file"] and backup["diff"]["before_header"] == "/etc/systemd/nspawn/ns-set.nspawn", backup


def _check_nixos_config(run, host):
    switched = run.get("Switch | real 1", host)
    assert switched["actions"] == ["write", "add_import", "lock", "rebuild"], switched
    assert any("only the activation snippet specialfs failed" in warning for warning in switched["warnings"]), switched
    assert switched["nixpkgs"]["type"] == "path" and switched["rebuild"]["switch_status"] == 2, switched
    collected = run.get("Keep generations | real 1", host)
    assert collected["garbage"]["store_paths_deleted"] > 0 and collected["garbage"]["freed"], collected
    syntax = run.record("Syntax error | real fails", host)
    assert syntax["status"] == "failed" and "/etc/nixos/ansible.nix:1:9: syntax error" in syntax["result"]["msg"], syntax
    rolled_back = run.record("Failing rebuild with rollback | real fails", host)
    assert rolled_back["status"] == "failed" and rolled_back["result"]["rebuild"]["rolled_back"], rolled_back
    assert rolled_back["result"]["rc"] == 4, rolled_back
    assert rolled_back["result"]["rebuild"]["failed_units"] == ["fixture-fail.service"], rolled_back
    password = run.get("Root password | real 1", host)
    assert password["actions"] == ["set_root_password"], password
    assert password["invocation"]["module_args"]["root_password_hash"] == NO_LOG_PLACEHOLDER, password
    # The hash is no_log: not in the -v output, the warnings or any returned value.
    secret = run.secret
    printed = run.result.stdout + run.result.stderr
    assert "set_root_password" in run.result.stdout, "the -v output does not show the module results"
    for text, where in ((printed, "the output of ansible-playbook -v"), (json.dumps(run.records(host)), "the task results")):
        for part in (secret, secret.rsplit("$", 1)[-1]):
            assert part not in text, "the root password hash (or its digest part) appears in %s" % where


def _check_info(run, host):
    info = run.get("All | real 1", host)
    assert not info["changed"] and info["actions"] == [], info
    assert info["machines"]["info-run"]["state"] == "running", info
    assert info["images"]["info-stop"]["running"] is False, info


def _check_cleaned_up(target, lab_host):
    """No machine or image of the target is left on the host."""
    for verb, key in (("list", "machine"), ("list-images", "name")):
        done = lab_host.run(["machinectl", verb, "--no-legend", "--no-pager", "-o", "json"], check=True)
        names = {row[key] for row in json.loads(done.stdout or "[]")}
        left = names & set(TARGET_MACHINES[target])
        assert not left, "%s left %s in machinectl %s on %s" % (target, sorted(left), verb, lab_host.name)


# Finds the "Section.Key" names of systemd-nspawn's settings parser (its gperf table) in the binary.
NSPAWN_KEYS_SCRIPT = r"""
import json, re, shutil
data = open(shutil.which("systemd-nspawn"), "rb").read()
print(json.dumps(sorted(set(m.decode() for m in re.findall(rb"(?<=\x00)(?:Exec|Files|Network)\.[A-Za-z]+(?=\x00)", data)))))
"""


def test_nspawn_settings_keys_are_those_of_the_hosts_systemd_nspawn(lab_host):
    """nspawn_settings accepts exactly the keys the host's systemd-nspawn parses.

    The module's table (_nspawn_ini.KEYS, with the first version of each key) filtered by the
    host's systemd version must equal the key names in the host's systemd-nspawn binary: a
    key missing there would be refused although valid, an extra one accepted and ignored.
    """
    sys.path.insert(0, str(collections_path()))
    from ansible_collections.nspawn.nixos.plugins.module_utils._nspawn_ini import KEYS  # pylint: disable=import-outside-toplevel

    done = lab_host.run(["python3", "-c", NSPAWN_KEYS_SCRIPT], check=True)
    in_binary = set(json.loads(done.stdout))
    accepted = {"%s.%s" % (section, key) for section, keys in KEYS.items() for key, spec in keys.items()
                if spec.since <= lab_host.systemd_version}
    assert len(in_binary) > 50, "did not find the settings table in systemd-nspawn: %s" % sorted(in_binary)
    assert accepted == in_binary, "only in the module: %s; only in systemd-nspawn %s: %s" % (
        sorted(accepted - in_binary), lab_host.systemd_version, sorted(in_binary - accepted))
