"""The integration targets of the five modules (tests/integration/targets/<module>) on every
lab host, over real SSH.

Each target runs once per session on all lab hosts at the same time (one ansible-playbook,
one fork per host: the hosts in the time of the slowest); the tests, parametrized over
target x lab_host, then judge each host's part from the JSON results: no failed task, every
case's "<case> | check N" predicted exactly what "<case> | real N" did (changed and
actions), "<case> | real 2" changed nothing, then the target's own results (_check_*).

nspawn_machine leaves its machine m-boot enabled and running; between its two playbooks the
lab hosts reboot themselves, and the second playbook (tasks_from: after_reboot) checks that
machines.target started m-boot again, then removes it. nixos_config runs with -v and a root
password hash made here for the session: the hash must not appear anywhere in what
ansible-playbook printed or returned. The configuration targets (nspawn_settings,
nixos_config, nspawn_info) remove their machines and images at the end (and what an
interrupted run left at their start), and the tests check that nothing is left.
"""

import json
import secrets
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import yaml

from lab.ansible_runner import TARGETS_DIR, case_steps, check_case_pattern, collections_path, task_name

TARGETS = ("nspawn_image", "nspawn_machine", "nspawn_settings", "nixos_config", "nspawn_info")
GZ_IMAGE = "nixos-fixture-x86_64-linux.tar.gz"
# The machines and images each configuration target creates (its defaults).
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
    """The playbook results of one target on every lab host (and, for nspawn_machine, the reboot in between)."""

    def __init__(self, target, results, reboot=None, secret=None):
        self.target = target
        self.results = results  # [PlaybookResult], in the order they ran
        self.reboot = reboot or {}  # host -> {"seconds", "state" of m-boot seen over SSH, "error"}
        self.secret = secret  # the root password hash given to nixos_config: never in the output

    @property
    def seconds(self):
        return sum(result.seconds for result in self.results)

    @property
    def printed(self):
        """Everything ansible-playbook printed, every playbook."""
        return "".join(result.stdout + result.stderr for result in self.results)

    def records(self, host):
        return [record for result in self.results for record in result.tasks if record["host"] == host]

    def record(self, task, host):
        """The record (status, result, ...) of the last run of a task (name without the role prefix) on host."""
        matches = [record for record in self.records(host) if task_name(record) == task]
        if not matches:
            raise KeyError(f"no task {task!r} on {host} in {self.target}")
        return matches[-1]

    def result(self, task, host):
        """The result dict of the last run of a task on host."""
        return self.record(task, host)["result"]

    def explain(self, host):
        """Everything a reader needs when a test fails: failed tasks in full, then the output."""
        runs = ", ".join(f"playbook rc={result.rc} in {result.seconds:.1f} s" for result in self.results)
        lines = [f"target {self.target} on {host}: {runs}"]
        for record in self.records(host):
            if record["status"] in ("failed", "unreachable") and not record["ignored"]:
                lines.append(f"FAILED task {record['task']!r}:\n{json.dumps(record['result'], indent=1, default=str)[-6000:]}")
        for result in self.results:
            text = str(result)
            lines.append(text.replace(self.secret, "<the hash>") if self.secret else text)
        return "\n".join(lines)


_RUNS = {}


@pytest.fixture(scope="session")
def target_run(lab, ansible_runner):
    """target -> TargetRun, each target run once per session on all lab hosts."""

    def run(target):
        if target not in _RUNS:
            if target == "nspawn_machine":
                _RUNS[target] = _run_machine_target(lab, ansible_runner)
            elif target == "nixos_config":
                secret = sha512_crypt_hash()
                result = ansible_runner.run_target(target, gather_facts=False, verbosity=1,
                                                   extra_vars={"nixos_config_root_hash": secret})
                _RUNS[target] = TargetRun(target, [result], secret=secret)
            else:
                _RUNS[target] = TargetRun(target, [ansible_runner.run_target(target, gather_facts=False)])
        return _RUNS[target]

    return run


def _run_machine_target(lab, ansible_runner):
    """nspawn_machine, then a reboot of every host itself, then its after_reboot tasks."""
    first = ansible_runner.run_target("nspawn_machine", gather_facts=False, extra_vars={"nspawn_machine_keep_for_reboot": True})
    with ThreadPoolExecutor(max_workers=len(lab.hosts)) as pool:
        reboot = dict(zip([host.name for host in lab.hosts], pool.map(lambda host: _reboot(lab, host), lab.hosts)))
    # Always run: it also removes m-boot and the base image the first playbook left.
    after = ansible_runner.playbook([{
        "name": "nspawn_machine after the reboot of the host", "hosts": "sidecar_hosts", "gather_facts": False,
        "tasks": [{"name": "Check the enabled machine after the reboot of the host",
                   "ansible.builtin.include_role": {"name": "nspawn_machine", "tasks_from": "after_reboot"}}],
    }])
    return TargetRun("nspawn_machine", [first, after], reboot)


def _reboot(lab, host, timeout=60):
    """Reboot the lab host itself, then ask machinectl over SSH until m-boot runs again."""
    try:
        seconds = lab.reboot(host.name)
    # Any failure of the reboot is reported by the test of this host, not raised in the fixture.
    except Exception as error:  # pylint: disable=broad-exception-caught
        return {"error": "reboot of %s failed: %s" % (host.name, error)}
    deadline = time.monotonic() + timeout
    while True:
        answer = host.ssh(["machinectl", "show", "m-boot", "--property=State", "--value"], timeout=30)
        state = answer.stdout.strip() or answer.stderr.strip()
        if state == "running" or time.monotonic() > deadline:
            return {"seconds": seconds, "state": state, "after": round(time.monotonic() - deadline + timeout, 1)}
        time.sleep(0.5)


def _assert_conditions(target):
    """Assert task name -> number of its `that` conditions, read from the target's task files
    (blocks included; a looped assert checks them once per item)."""
    conditions = {}
    for path in sorted((TARGETS_DIR / target / "tasks").glob("*.yml")):
        for task in _tasks(yaml.safe_load(path.read_text()) or []):
            module_args = task.get("ansible.builtin.assert")
            if isinstance(module_args, dict) and "name" in task:
                that = module_args.get("that", [])
                conditions[task["name"]] = len(that) if isinstance(that, list) else 1
    return conditions


def _tasks(tasks):
    for task in tasks:
        yield task
        for section in ("block", "rescue", "always"):
            yield from _tasks(task.get(section) or [])


@pytest.mark.parametrize("target", TARGETS)
def test_target(target, lab, lab_host, target_run, capsys):
    run = target_run(target)
    host = lab_host.name

    for result in run.results:
        assert host in result.stats, run.explain(host)
        assert result.stats[host]["failures"] == 0 and result.stats[host]["unreachable"] == 0, run.explain(host)
    failed = [record for record in run.records(host) if record["status"] in ("failed", "unreachable") and not record["ignored"]]
    assert not failed, run.explain(host)
    for result in run.results:
        # One playbook runs every lab host: rc 2 with this host clean means another host failed (its own test says so).
        others_failed = any(stats["failures"] or stats["unreachable"] for name, stats in result.stats.items() if name != host)
        assert result.rc == 0 or (result.rc == 2 and others_failed), run.explain(host)

    # The cases of the pattern: those with check or real steps (not the setup and cleanup around them).
    cases = {case: steps for case, steps in case_steps(run.records(host)).items()
             if any(step.startswith(("check", "real")) for step in steps)}
    check_case_pattern(cases, lambda: run.explain(host))
    CHECKS[target](run, host, lab)
    if target in TARGET_MACHINES:
        _check_cleaned_up(target, lab_host)
    _summary(run, lab_host, cases, capsys)


def _summary(run, lab_host, cases, capsys):
    records = run.records(lab_host.name)
    conditions = _assert_conditions(run.target)
    asserts = [record for record in records if record["action"] == "ansible.builtin.assert"]
    checked = sum(len(record["result"].get("results") or [None]) * conditions.get(task_name(record), 0) for record in asserts)
    module_calls = sum(len(record["result"].get("results") or [None]) for record in records if record["action"].startswith("nspawn.nixos."))
    reboot = run.reboot.get(lab_host.name, {})
    after_reboot = f" (host reboot {reboot['seconds']:.1f} s)" if "seconds" in reboot else ""
    with capsys.disabled():
        print(f"\n{run.target} on {lab_host.name} (systemd {lab_host.systemd_version}): {len(cases)} cases, "
              f"{len(asserts)} assert tasks with {checked} conditions passed, {module_calls} module calls, "
              f"{len(records)} tasks, {run.seconds:.1f} s for all hosts{after_reboot}")


def _check_image(run, host, lab):
    served_sha256 = lab.images["files"][GZ_IMAGE]["sha256"]
    downloaded = run.result("Download unverified | real 1", host)
    assert downloaded["sha256"] == served_sha256, downloaded
    assert any("is not verified" in warning and served_sha256 in warning for warning in downloaded["warnings"]), downloaded
    if lab.host(host).importd:
        pulled = run.result("Pull unverified | real 1", host)
        assert pulled["actions"] == ["pull", "record_origin"] and pulled["sha256"] is None, pulled
        assert any("is not verified" in warning for warning in pulled["warnings"]), pulled
    else:
        # No importd: a pull is refused, auto downloads (sha256 known), an export is refused.
        assert "method: pull needs systemd-importd" in run.result("No importd pull | real fails", host)["msg"]
        auto = run.result("No importd auto | real 1", host)
        assert auto["actions"] == ["download", "import", "record_origin"] and auto["sha256"] == served_sha256, auto
        assert "systemd-importd" in run.result("No importd export | real fails", host)["msg"]
    for task in ("Pinned sha256 | real 1", "SHA256SUMS URL | real 1", "File URL | real 1"):
        assert run.result(task, host)["sha256"] == served_sha256, run.result(task, host)
    drift = run.result("Drift of url and sha256 | real 1", host)
    assert not drift["changed"] and set(drift["drift"]) == {"url", "sha256"}, drift
    wrong = run.result("Wrong sha256 | real fails", host)
    assert "Checksum mismatch" in wrong["msg"] and wrong["actions"] == ["download"], wrong
    cut = run.result("Cut download | real fails", host)
    assert cut["actions"] == ["download"], cut


def _check_machine(run, host, lab):  # pylint: disable=unused-argument
    started = run.result("Start | real 1", host)
    assert started["state"] == "running" and started["os_release"]["ID"] == "nixos-fixture", started
    assert isinstance(started["leader"], int) and started["leader"] > 1, started
    before = run.result("Restarted | start the machine", host)["leader"]
    first, second = run.result("Restarted | real 1", host)["leader"], run.result("Restarted | real again", host)["leader"]
    assert len({before, first, second}) == 3, "the leader PID did not change on restart: %s, %s, %s" % (before, first, second)
    assert run.result("Stopped | real 1", host)["leader"] is None
    reboot = run.reboot[host]
    assert "error" not in reboot, reboot["error"] + "\n" + run.explain(host)
    assert reboot["state"] == "running", "after the reboot of %s, machinectl show m-boot said %r (over SSH)" % (host, reboot["state"])
    after = run.result("After the host reboot | real 1", host)
    assert after["state"] == "running" and after["enabled"] and after["actions"] == [], after
    assert run.result("After the host reboot | wait until machined reports m-boot running", host)["stdout"] == "running"


def _check_settings(run, host, lab):  # pylint: disable=unused-argument
    applied = run.result("Apply | real 1", host)
    assert applied["changed"] and applied["restart_required"], applied
    assert applied["settings"]["Network"] == {"VirtualEthernet": ["no"]}, applied
    assert run.result("Restart | reboot the machine, as restart_required asked", host)["changed"]
    assert run.result("Restart | try to write through the read-only bind, inside the machine", host)["stdout"] == "READ-ONLY"
    bad = [item for task in ("Bad input | check", "Bad input | real") for item in run.result(task, host)["results"]]
    assert bad and all(item["failed"] and item["msg"].startswith(item["item"]["option"] + ": ") for item in bad), bad
    backup = run.result("Backup | real 1", host)
    assert backup["backup_file"] and backup["diff"]["before_header"] == "/etc/systemd/nspawn/ns-set.nspawn", backup


def _check_nixos_config(run, host, lab):  # pylint: disable=unused-argument
    switched = run.result("Switch | real 1", host)
    assert switched["actions"] == ["write", "add_import", "lock", "rebuild"], switched
    assert any("only the activation snippet specialfs failed" in warning for warning in switched["warnings"]), switched
    assert switched["nixpkgs"]["type"] == "path" and switched["rebuild"]["switch_status"] == 2, switched
    collected = run.result("Keep generations | real 1", host)
    assert collected["garbage"]["store_paths_deleted"] > 0 and collected["garbage"]["freed"], collected
    syntax = run.record("Syntax error | real fails", host)
    assert syntax["status"] == "failed" and "/etc/nixos/ansible.nix:1:9: syntax error" in syntax["result"]["msg"], syntax
    rolled_back = run.record("Failing rebuild with rollback | real fails", host)
    assert rolled_back["status"] == "failed" and rolled_back["result"]["rebuild"]["rolled_back"], rolled_back
    assert rolled_back["result"]["rc"] == 4, rolled_back
    assert rolled_back["result"]["rebuild"]["failed_units"] == ["fixture-fail.service"], rolled_back
    password = run.result("Root password | real 1", host)
    assert password["actions"] == ["set_root_password"], password
    assert password["invocation"]["module_args"]["root_password_hash"] == NO_LOG_PLACEHOLDER, password
    # The hash is no_log: not in the -v output, the warnings or any returned value.
    secret = run.secret
    printed = run.printed
    assert "set_root_password" in run.printed, "the -v output does not show the module results"
    for text, where in ((printed, "the output of ansible-playbook -v"), (json.dumps(run.records(host)), "the task results")):
        for part in (secret, secret.rsplit("$", 1)[-1]):
            assert part not in text, "the root password hash (or its digest part) appears in %s" % where


def _check_info(run, host, lab):  # pylint: disable=unused-argument
    info = run.result("All | real 1", host)
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


CHECKS = {
    "nspawn_image": _check_image,
    "nspawn_machine": _check_machine,
    "nspawn_settings": _check_settings,
    "nixos_config": _check_nixos_config,
    "nspawn_info": _check_info,
}


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
    from ansible_collections.nspawn.nixos.plugins.module_utils._systemd._nspawn_ini import KEYS  # pylint: disable=import-outside-toplevel

    done = lab_host.run(["python3", "-c", NSPAWN_KEYS_SCRIPT], check=True)
    in_binary = set(json.loads(done.stdout))
    accepted = {"%s.%s" % (section, key) for section, keys in KEYS.items() for key, spec in keys.items()
                if spec.since <= lab_host.systemd_version}
    assert len(in_binary) > 50, "did not find the settings table in systemd-nspawn: %s" % sorted(in_binary)
    assert accepted == in_binary, "only in the module: %s; only in systemd-nspawn %s: %s" % (
        sorted(accepted - in_binary), lab_host.systemd_version, sorted(in_binary - accepted))
