"""Integration targets of the modules (tests/integration/targets/nspawn_image, nspawn_machine)
on every lab host, over real SSH.

Each target runs once per session on all lab hosts at the same time (one ansible-playbook,
one fork per host: both releases in the time of the slower one); the tests, parametrized
over target x lab_host, then judge each host's part from the JSON results. nspawn_machine
leaves its machine m-boot enabled and running; between its two playbooks the lab hosts
reboot themselves, and the second playbook (tasks_from: after_reboot) checks that
machines.target started m-boot again, then removes it.

Besides the targets' own asserts, every case is checked here by the names of its tasks:
"<case> | check 1" predicts exactly what "<case> | real 1" did (changed and actions), the
same for "check 2" / "real 2", and "<case> | real 2" changed nothing (actions == []).
"""

import json
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import yaml

from runner import CASE_TASK, TARGETS_DIR, case_steps, check_case_pattern, task_name

TARGETS = ("nspawn_image", "nspawn_machine")
GZ_IMAGE = "nixos-fixture-x86_64-linux.tar.gz"


class TargetRun:
    """The playbook results of one target on every lab host (and the reboot in between)."""

    def __init__(self, target, results, reboot=None):
        self.target = target
        self.results = results  # [PlaybookResult], in the order they ran
        self.reboot = reboot or {}  # host -> {"seconds", "state" of m-boot seen over SSH, "error"}

    @property
    def seconds(self):
        return sum(result.seconds for result in self.results)

    def records(self, host):
        return [record for result in self.results for record in result.tasks if record["host"] == host]

    def result(self, task, host):
        """The result dict of the last run of a task (name without the role prefix) on host."""
        matches = [record for record in self.records(host) if task_name(record) == task]
        if not matches:
            raise KeyError("no task %r on %s in %s" % (task, host, self.target))
        return matches[-1]["result"]

    def explain(self, host):
        """Everything a reader needs when a test fails: failed tasks in full, then the output."""
        lines = ["target %s on %s: %s" % (self.target, host, ", ".join(
            "playbook rc=%d in %.1f s" % (result.rc, result.seconds) for result in self.results))]
        for record in self.records(host):
            if record["status"] in ("failed", "unreachable") and not record["ignored"]:
                lines.append("FAILED task %r:\n%s" % (record["task"], json.dumps(record["result"], indent=1, default=str)[-6000:]))
        for result in self.results:
            lines.append(str(result))
        return "\n".join(lines)


_RUNS = {}


@pytest.fixture(scope="session")
def target_run(lab, ansible_runner):
    """target -> TargetRun, each target run once per session on all lab hosts."""

    def run(target):
        if target not in _RUNS:
            _RUNS[target] = _run_machine_target(lab, ansible_runner) if target == "nspawn_machine" \
                else TargetRun(target, [ansible_runner.run_target(target, gather_facts=False)])
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
    """Assert task name -> number of its `that` conditions, read from the target's task files."""
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


def _summary(run, host, cases, capsys):
    records = run.records(host)
    asserts = [record for record in records if record["action"] == "ansible.builtin.assert"]
    per_task = _assert_conditions(run.target)
    conditions = sum(per_task.get(task_name(record), 0) * max(1, len(record["result"].get("results", [])))
                     for record in asserts)
    assert_cases = {CASE_TASK.match(task_name(record)).group("case") for record in asserts if CASE_TASK.match(task_name(record))}
    module_calls = [record for record in records if record["action"].startswith("nspawn.nixos.")]
    reboot = " (host reboot %.1f s)" % run.reboot[host]["seconds"] if "seconds" in run.reboot.get(host, {}) else ""
    with capsys.disabled():
        print("\n%s on %s: %d cases, %d assert tasks (%d conditions) passed, %d module calls, %d tasks, %.1f s for all hosts%s"
              % (run.target, host, len(assert_cases), len(asserts), conditions, len(module_calls), len(records), run.seconds, reboot))


@pytest.mark.parametrize("target", TARGETS)
def test_module_target(target, lab, lab_host, target_run, capsys):
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

    cases = case_steps(run.records(host))
    check_case_pattern(cases, lambda: run.explain(host))
    if target == "nspawn_image":
        _check_image_results(run, host, lab)
    else:
        _check_machine_results(run, host)
    _summary(run, host, cases, capsys)


def _check_image_results(run, host, lab):
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


def _check_machine_results(run, host):
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
