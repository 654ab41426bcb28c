"""The bad-input corpus (bad_inputs.yml) on every lab host: each invalid input to a module or
to the role nspawn.nixos.sidecar fails with a message that names its option, and leaves the
host as it was.

One ansible-playbook runs the whole corpus on all lab hosts at the same time (one fork per
host). On each host it first sets up what a bad input could damage (bad_input/setup.yml:
the image `rel`, its settings file, the machine running and enabled, a NixOS generation),
takes a snapshot of the host (snapshot.SNAPSHOT_SCRIPT, run by a command task), then per
case runs the module for real (and before that in check mode, where the case says so; the
role in a block whose rescue records its failure) and takes another snapshot; at the end it
removes what it made (bad_input/cleanup.yml). The tests, parametrized over case x lab_host, judge each case from
the JSON results: every run failed, its message names the option(s) (and the rule), and the
snapshot after the case equals the one before it - so a change is blamed on its case.

A case with `known_bug` is expected to fail (strict xfail): the plugin still has to be
fixed. The counts per host go to tests/output/reliability-bad-input.json.
"""

import base64
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

from lab.ansible_runner import OUTPUT_DIR, case_steps
from snapshot import SNAPSHOT_SCRIPT, differences, parse_snapshot

HERE = Path(__file__).resolve().parent
CORPUS_PATH = HERE / "bad_inputs.yml"
SETUP_TASKS = HERE / "bad_input" / "setup.yml"
CLEANUP_TASKS = HERE / "bad_input" / "cleanup.yml"
REPORT_PATH = OUTPUT_DIR / "reliability-bad-input.json"
ROLE = "nspawn.nixos.sidecar"
MODULES = ("nspawn_image", "nspawn_machine", "nspawn_settings", "nixos_config", "nspawn_info")
MIN_CASES = 40
BASELINE = "baseline"
# The machine names of the corpus that the cleanup removes (no bad ones).
SIMPLE_NAME = re.compile(r"[a-z][a-z0-9-]{0,30}")
# snapshot.SNAPSHOT_SCRIPT, base64-encoded so that Jinja never sees it.
SNAPSHOT_WRAPPER = "import base64; exec(base64.b64decode('%s').decode())"


def load_corpus(path=CORPUS_PATH):
    """The corpus file, its cases checked for the fields the test needs."""
    corpus = yaml.safe_load(path.read_text(encoding="utf-8"))
    ids = [case["id"] for case in corpus["cases"]]
    duplicates = sorted({case_id for case_id in ids if ids.count(case_id) > 1})
    if duplicates:
        raise ValueError("%s: duplicate case ids %s" % (path, duplicates))
    for case in corpus["cases"]:
        if case["module"] not in MODULES + ("role",) or not case.get("option") or " | " in case["id"]:
            raise ValueError("%s: bad case %r" % (path, case))
    return corpus


CORPUS = load_corpus()
CASES = CORPUS["cases"]


def case_args(case):
    """The module's arguments (the role's variables) of a case: its own over the defaults, without nulls."""
    args = dict(CORPUS["defaults"].get(case["module"], {}))
    args.update(case.get("args") or {})
    return {key: value for key, value in args.items() if value is not None}


def case_options(case):
    """The options a case's message must name."""
    return case["option"] if isinstance(case["option"], list) else [case["option"]]


def case_runs(case):
    """The steps of a case whose result is judged: the runs that must fail."""
    if case["module"] == "role":
        return ["real"]
    return ["check", "real"] if case.get("check") else ["real"]


def names_option(message, option):
    """Whether message names option as a whole word (`name` is not in `sidecar_name`)."""
    return re.search(r"(?<![\w])%s(?![\w])" % re.escape(option), message) is not None


def snapshot_task(label):
    """A task that prints the host's snapshot (SNAPSHOT_WRAPPER), named "<label> | snapshot"."""
    return {"name": "%s | snapshot" % label, "ansible.builtin.command": {"argv": "{{ bad_input_snapshot_argv }}"},
            "changed_when": False}


def case_tasks(case):
    """The tasks of one case: its runs, which may fail, then a snapshot of the host."""
    args = case_args(case)
    if case["module"] == "role":
        # A rescue, not ignore_errors: the role stops at its first failure, as it would for a user.
        runs = [{"name": "%s | role" % case["id"],
                 "block": [{"name": "%s | include" % case["id"], "ansible.builtin.include_role": {"name": ROLE}, "vars": args}],
                 "rescue": [{"name": "%s | real" % case["id"], "ansible.builtin.debug": {"var": "ansible_failed_result"}}]}]
    else:
        runs = [{"name": "%s | %s" % (case["id"], step), "nspawn.nixos." + case["module"]: args,
                 "check_mode": step == "check", "ignore_errors": True} for step in case_runs(case)]
    return runs + [snapshot_task(case["id"])]


def corpus_names():
    """The machine names of the setup and of the cases that a cleanup can remove."""
    names = {"rel"}
    for case in CASES:
        name = case_args(case).get("name") if case["module"] != "role" else case_args(case).get("sidecar_name")
        if isinstance(name, str) and SIMPLE_NAME.fullmatch(name):
            names.add(name)
    return sorted(names)


def corpus_plays():
    """The playbook: setup, baseline snapshot, every case, cleanup - on all lab hosts."""
    snapshot = SNAPSHOT_WRAPPER % base64.b64encode(SNAPSHOT_SCRIPT.encode()).decode()
    cleanup = {"name": "Remove the machines of the corpus", "ansible.builtin.include_tasks": str(CLEANUP_TASKS)}
    tasks = [dict(cleanup, name="Remove what an interrupted earlier run left"),
             {"name": "Set up the machine rel", "ansible.builtin.include_tasks": str(SETUP_TASKS)},
             snapshot_task(BASELINE)]
    for case in CASES:
        tasks.extend(case_tasks(case))
    variables = dict(CORPUS["vars"], bad_input_names=corpus_names(), bad_input_snapshot_argv=["python3", "-c", snapshot])
    # strategy free: each host goes through its cases at its own pace, not at the slower host's.
    return [{"name": "bad-input corpus", "hosts": "sidecar_hosts", "gather_facts": False, "strategy": "free", "vars": variables,
             "tasks": [{"name": "Run the corpus", "block": tasks, "always": [cleanup]}]}]


def snapshot_of(record):
    """The snapshot a snapshot task printed, normalised like snapshot.host_snapshot()."""
    if record is None or record["status"] != "ok":
        return None
    return parse_snapshot(record["result"]["stdout"])


def failure_message(case, record):
    """The message of a failed run, or None when the run did not fail (or did not run)."""
    if record is None:
        return None
    result = record["result"]
    if case["module"] == "role":
        result = result.get("ansible_failed_result") or {}
    elif record["status"] != "failed":
        return None
    return str(result.get("msg", ""))


@dataclass
class Verdict:
    """How one case went on one host."""

    case: dict
    messages: dict = field(default_factory=dict)   # step -> message of the failed run (None: it did not fail)
    changes: list = field(default_factory=list)    # differences of the host before and after the case
    snapshot_missing: bool = False

    @property
    def refused(self):
        """Every run failed, with a message naming every option of the case (and its rule)."""
        return all(message is not None and all(names_option(message, option) for option in case_options(self.case))
                   and self.case.get("rule", "") in message for message in self.messages.values())

    @property
    def unchanged(self):
        """The snapshot after the case equals the one before it."""
        return not self.changes and not self.snapshot_missing

    def explain(self):
        """What a reader needs when the case fails: its arguments, the messages, the changes."""
        return "case %s (%s %s):\n  messages: %s\n  host changes: %s" % (
            self.case["id"], self.case["module"], json.dumps(case_args(self.case), default=str),
            json.dumps(self.messages, indent=1), "snapshot missing" if self.snapshot_missing else self.changes[:30])


def judge_host(result, host):
    """case id -> Verdict for one host, and the baseline snapshot."""
    steps = case_steps([record for record in result.tasks if record["host"] == host])
    previous = baseline = snapshot_of(steps.get(BASELINE, {}).get("snapshot"))
    verdicts = {}
    for case in CASES:
        case_steps_found = steps.get(case["id"], {})
        verdict = Verdict(case, {step: failure_message(case, case_steps_found.get(step)) for step in case_runs(case)})
        after = snapshot_of(case_steps_found.get("snapshot"))
        if after is None or previous is None:
            verdict.snapshot_missing = True
        else:
            verdict.changes = differences(previous, after)
        previous = after if after is not None else previous
        verdicts[case["id"]] = verdict
    return verdicts, baseline


@dataclass
class CorpusRun:
    """The playbook's result and the verdicts per host."""

    result: object
    verdicts: dict   # host -> case id -> Verdict
    baselines: dict  # host -> baseline snapshot (None when the setup failed)

    def counts(self, host):
        """The numbers of the report for host, with the ids and details of the cases that fail."""
        verdicts = self.verdicts[host].values()
        return {
            "cases": len(verdicts),
            "refused_naming_option": sum(verdict.refused for verdict in verdicts),
            "host_unchanged": sum(verdict.unchanged for verdict in verdicts),
            "known_bugs": sorted(verdict.case["id"] for verdict in verdicts if verdict.case.get("known_bug")),
            "failing": sorted(verdict.case["id"] for verdict in verdicts if not (verdict.refused and verdict.unchanged)),
            "details": {verdict.case["id"]: {"messages": verdict.messages, "changes": verdict.changes[:20]}
                        for verdict in verdicts if not (verdict.refused and verdict.unchanged)},
        }

    def explain(self, host):
        """The failed tasks of the setup and cleanup on host, and the playbook's output."""
        failed = [record for record in self.result.tasks if record["host"] == host and record["status"] == "failed"
                  and not record["ignored"] and record["task"].startswith(("Setup | ", "Cleanup | "))]
        return "\n".join(["FAILED task %r: %s" % (record["task"], json.dumps(record["result"], default=str)[-3000:])
                          for record in failed] + [str(self.result)])


def per_module_counts():
    """module (or role) -> number of cases."""
    counts = {}
    for case in CASES:
        counts[case["module"]] = counts.get(case["module"], 0) + 1
    return counts


@pytest.fixture(scope="module")
def corpus_run(lab, ansible_runner):
    """The corpus, run once on all lab hosts; the counts written to REPORT_PATH."""
    result = ansible_runner.playbook(corpus_plays(), timeout=900)
    verdicts, baselines = {}, {}
    for host in lab.hosts:
        verdicts[host.name], baselines[host.name] = judge_host(result, host.name)
    run = CorpusRun(result, verdicts, baselines)
    report = {"cases": len(CASES), "per_module": per_module_counts(), "seconds": result.seconds,
              "hosts": {host.name: run.counts(host.name) for host in lab.hosts}}
    REPORT_PATH.parent.mkdir(parents=True, exist_ok=True)
    REPORT_PATH.write_text(json.dumps(report, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return run


def test_corpus_setup(corpus_run, lab_host, capsys):
    """The setup gave the host what a bad input could damage, no task but the cases failed, and only
    the cases marked known_bug fail."""
    host = lab_host.name
    baseline = corpus_run.baselines[host]
    assert baseline is not None, corpus_run.explain(host)
    assert "/etc/systemd/nspawn/rel.nspawn" in baseline["files"], baseline["files"]
    assert "etc/nixos/ansible.nix" in baseline["images"]["rel"]["etc/nixos"], baseline["images"]["rel"]
    assert baseline["images"]["rel"]["profiles"].get("system", "").startswith("system-"), baseline["images"]["rel"]
    assert baseline["machines"]["states"].get("rel") == "running", baseline["machines"]
    assert "systemd-nspawn@rel.service" in baseline["machines"]["enabled"], baseline["machines"]["enabled"]
    # The cases fail on purpose: ignored (modules) or rescued (the role), so not counted as failures.
    stats = corpus_run.result.stats.get(host, {})
    assert stats and stats["failures"] == 0 and stats["unreachable"] == 0, corpus_run.explain(host)
    counts = corpus_run.counts(host)
    with capsys.disabled():
        print("\nbad input on %s: %d cases (%s), %d refused naming their option, %d left the host unchanged, "
              "%d known bugs, %.1f s for all hosts" % (
                  host, counts["cases"], ", ".join("%s %d" % item for item in sorted(per_module_counts().items())),
                  counts["refused_naming_option"], counts["host_unchanged"], len(counts["known_bugs"]), corpus_run.result.seconds))
    assert counts["cases"] >= MIN_CASES
    details = counts.pop("details")
    failing = {case_id: details[case_id] for case_id in counts["failing"] if case_id not in counts["known_bugs"]}
    assert counts["failing"] == counts["known_bugs"], "cases failing: %s, marked known_bug: %s\n%s" % (
        counts["failing"], counts["known_bugs"], json.dumps(failing, indent=1))


@pytest.mark.parametrize("case", [pytest.param(case, id=case["id"], marks=[pytest.mark.xfail(reason=case["known_bug"], strict=True)]
                                               if case.get("known_bug") else []) for case in CASES])
def test_bad_input(corpus_run, lab_host, case):
    """The case failed in every run with a message naming its option, and the host did not change."""
    verdict = corpus_run.verdicts[lab_host.name][case["id"]]
    assert corpus_run.baselines[lab_host.name] is not None, "the setup failed:\n" + corpus_run.explain(lab_host.name)
    assert verdict.refused, verdict.explain()
    assert verdict.unchanged, verdict.explain()
