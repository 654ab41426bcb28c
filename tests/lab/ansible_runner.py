"""Run ansible-playbook against a lab, with the results as data.

The venv's ansible-playbook (next to sys.executable) runs with an environment that finds
this checkout as the collection nspawn.nixos (tests/output/collections/ansible_collections/
nspawn/nixos is a symlink to the checkout root), the integration targets as roles, and the
lab_json callback, which writes every task result to a JSON file while the default
callback keeps printing what a human reads.

    runner = AnsibleRunner(lab.inventory)   # or the ansible_runner fixture (pytest_plugin.py)
    result = runner.run_target("smoke", limit=host.name)
    assert result.rc == 0, result
    result.result("Run a command that exits 3", host.name)["rc"]
"""

import json
import os
import re
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

TESTS_DIR = Path(__file__).resolve().parents[1]
INTEGRATION_DIR = TESTS_DIR / "integration"
CHECKOUT = TESTS_DIR.parent
OUTPUT_DIR = TESTS_DIR / "output"  # git-ignored
TARGETS_DIR = INTEGRATION_DIR / "targets"
CALLBACKS_DIR = INTEGRATION_DIR / "callback_plugins"
# Integration targets name their tasks "<case> | <step>" (e.g. "start | check 1"); results
# carry them as "<role> : <case> | <step>".
ROLE_PREFIX = re.compile(r"^[a-z_]+ : ")
CASE_TASK = re.compile(r"^(?P<case>.+?) \| (?P<step>.+)$")


def task_name(record):
    """A task record's name without the role prefix."""
    return ROLE_PREFIX.sub("", record["task"])


def case_steps(records):
    """case -> {step: record} for tasks named "<case> | <step>" that ran (not skipped)."""
    found = {}
    for record in records:
        match = CASE_TASK.match(task_name(record))
        if match and record["status"] != "skipped":
            found.setdefault(match.group("case"), {})[match.group("step")] = record
    return found


def check_case_pattern(cases, explain):
    """Fail (with explain()'s text) where cases ({case: {step: record}}, from case_steps) break the
    targets' pattern: "check N" predicts "real N" exactly (changed and actions), "check 1" predicts
    the actions a failing real run ("real fails") began with, and "real 2" changes nothing."""
    problems = []
    for case, steps in sorted(cases.items()):
        for check, real in (("check 1", "real 1"), ("check 2", "real 2")):
            if check in steps and real in steps:
                predicted, done = steps[check]["result"], steps[real]["result"]
                if (predicted.get("changed"), predicted.get("actions")) != (done.get("changed"), done.get("actions")):
                    problems.append("%s: %s said changed=%s actions=%s, %s did changed=%s actions=%s" % (
                        case, check, predicted.get("changed"), predicted.get("actions"), real, done.get("changed"), done.get("actions")))
        if "check 1" in steps and "real fails" in steps:
            predicted, done = steps["check 1"]["result"], steps["real fails"]["result"]
            if not predicted.get("changed") or done.get("actions")[:len(predicted["actions"])] != predicted["actions"]:
                problems.append("%s: check 1 predicted %s, the failing real run did %s" % (case, predicted.get("actions"), done.get("actions")))
        if "real 2" in steps:
            second = steps["real 2"]["result"]
            if second.get("changed") or second.get("actions") != []:
                problems.append("%s: the second real run was not a no-op: changed=%s actions=%s"
                                % (case, second.get("changed"), second.get("actions")))
    assert not problems, "\n".join(problems) + "\n" + explain()


def collections_path():
    """A directory holding ansible_collections/nspawn/nixos -> this checkout."""
    root = OUTPUT_DIR / "collections"
    link = root / "ansible_collections" / "nspawn" / "nixos"
    if not link.is_symlink():
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(os.path.relpath(CHECKOUT, link.parent))
    return root


# Runs argv[2:], then writes the peak RSS of its process tree (KiB) to argv[1] and exits with its status.
_PEAK_RSS_SCRIPT = ("import resource, subprocess, sys; done = subprocess.run(sys.argv[2:]); "
                    "open(sys.argv[1], 'w').write(str(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)); "
                    "sys.exit(done.returncode)")


@dataclass
class PlaybookResult:
    """Outcome of one ansible-playbook run."""

    argv: list
    rc: int
    stdout: str
    stderr: str
    seconds: float
    tasks: list = field(default_factory=list)   # lab_json records: play, task, action, host, status, ignored, result
    stats: dict = field(default_factory=dict)   # host -> ok/changed/failures/unreachable/skipped/rescued/ignored
    peak_rss_mib: int = None                    # with playbook(peak_rss=True): the largest RSS of ansible-playbook and its children

    def results(self, task=None, host=None):
        """Records of tasks whose name ends with `task` (role prefix optional), on `host`."""
        return [record for record in self.tasks
                if (task is None or record["task"] == task or record["task"].endswith(" : " + task))
                and (host is None or record["host"] == host)]

    def result(self, task, host):
        """The result dict of one task on one host (the last run, if it ran more than once)."""
        records = self.results(task, host)
        if not records:
            raise KeyError("no result of task %r on %s; tasks run: %s" % (task, host, sorted({record["task"] for record in self.tasks})))
        return records[-1]["result"]

    @property
    def failed(self):
        """Records of failed or unreachable tasks that were not ignored."""
        return [record for record in self.tasks if record["status"] in ("failed", "unreachable") and not record["ignored"]]

    def __str__(self):
        return "ansible-playbook exited %d after %.1f s\n%s\n%s" % (self.rc, self.seconds, self.stdout[-6000:], self.stderr[-3000:])


class AnsibleRunner:
    """Runs playbooks and integration targets against one inventory (a lab's)."""

    def __init__(self, inventory, env=None):
        self.inventory = Path(inventory)
        self.extra_env = dict(env or {})
        self.bin_dir = Path(sys.executable).parent

    def env(self, json_path=None):
        """The environment of ansible-playbook."""
        env = dict(os.environ)
        env.update({
            "PATH": "%s:%s" % (self.bin_dir, env.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")),
            "ANSIBLE_INVENTORY": str(self.inventory),
            "ANSIBLE_COLLECTIONS_PATH": str(collections_path()),
            "ANSIBLE_ROLES_PATH": str(TARGETS_DIR),
            "ANSIBLE_CALLBACK_PLUGINS": str(CALLBACKS_DIR),
            "ANSIBLE_HOST_KEY_CHECKING": "False",
            "ANSIBLE_PIPELINING": "True",
            "ANSIBLE_RETRY_FILES_ENABLED": "False",
            "ANSIBLE_NOCOLOR": "1",
            "ANSIBLE_FORCE_COLOR": "0",
            "ANSIBLE_DEPRECATION_WARNINGS": "True",
            # One fork per lab host (the matrix has more hosts than the default 5 forks).
            "ANSIBLE_FORKS": "16",
            "PYTHONUNBUFFERED": "1",
        })
        if json_path:
            env["NSPAWN_LAB_ANSIBLE_JSON"] = str(json_path)
        env.update(self.extra_env)
        return env

    def playbook(self, playbook, limit=None, extra_vars=None, check=False, diff=False, verbosity=0, timeout=1800, peak_rss=False):
        """Run a playbook (a path, or plays as a list of dicts) and return a PlaybookResult; with peak_rss, under a
        Python that measures the peak RSS of ansible-playbook and its children (getrusage RUSAGE_CHILDREN)."""
        work = Path(tempfile.mkdtemp(prefix="ansible-", dir=_ensure(OUTPUT_DIR / "tmp")))
        try:
            if not isinstance(playbook, (str, Path)):
                path = work / "playbook.yml"
                path.write_text(json.dumps(playbook, indent=2))  # JSON is YAML
                playbook = path
            json_path = work / "results.json"
            argv = [str(self.bin_dir / "ansible-playbook"), str(playbook)]
            if limit:
                argv += ["--limit", limit]
            if extra_vars:
                argv += ["--extra-vars", json.dumps(extra_vars)]
            if check:
                argv.append("--check")
            if diff:
                argv.append("--diff")
            if verbosity:
                argv.append("-" + "v" * verbosity)
            if peak_rss:
                argv = [sys.executable, "-c", _PEAK_RSS_SCRIPT, str(work / "peak-rss")] + argv
            started = time.monotonic()
            # cwd: a directory without ansible.cfg, so that only this environment counts.
            process = subprocess.run(argv, capture_output=True, text=True, env=self.env(json_path), cwd=work, timeout=timeout, check=False)
            data = json.loads(json_path.read_text()) if json_path.exists() else {}
            result = PlaybookResult(argv, process.returncode, process.stdout, process.stderr, round(time.monotonic() - started, 2),
                                    data.get("tasks", []), data.get("stats", {}))
            if peak_rss and (work / "peak-rss").exists():
                result.peak_rss_mib = int((work / "peak-rss").read_text()) // 1024
            return result
        finally:
            subprocess.run(["rm", "-rf", "--one-file-system", str(work)], check=False)

    def run_target(self, target, limit=None, extra_vars=None, gather_facts=True, **kwargs):
        """Run integration target `target` (tests/integration/targets/<target>, a role) on
        the hosts matching `limit` (default: every lab host)."""
        plays = [{"name": "integration target %s" % target, "hosts": limit or "sidecar_hosts", "gather_facts": gather_facts,
                  "roles": [{"role": target}]}]
        return self.playbook(plays, limit=limit, extra_vars=extra_vars, **kwargs)


def _ensure(path):
    path.mkdir(parents=True, exist_ok=True)
    return path
