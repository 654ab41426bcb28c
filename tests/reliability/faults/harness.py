"""Run a fault on every lab host at once and judge each host from snapshots and task results.

A fault runs as one ansible-playbook against all lab hosts (both releases in the time of
the slower one); each host is snapshotted (snapshot.host_snapshot) in parallel right
before and right after. The tests, parametrized over lab_host, then judge their host's
part. Outcomes are counted in tests/output/reliability-faults.json (Tally).

    run = run_fault(lab, ansible_runner, plays)
    record = run.record("Pull the image", host.name)
    assert_unchanged(run.before[host.name], run.after[host.name])
"""

import contextlib
import json
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from urllib.parse import urlsplit, urlunsplit

from lab.ansible_runner import OUTPUT_DIR
from snapshot import differences, host_snapshot

IMAGE_SERVER_UNIT = "nspawn-nixos-lab-images.service"
GZ_IMAGE = "nixos-fixture-x86_64-linux.tar.gz"
XZ_IMAGE = "nixos-fixture-x86_64-linux.tar.xz"
REDACTED = "********"
TALLY_PATH = OUTPUT_DIR / "reliability-faults.json"


def with_credentials(url, user, password):
    """url with user:password@ in front of its host."""
    parts = urlsplit(url)
    return urlunsplit(parts._replace(netloc="%s:%s@%s" % (user, password, parts.hostname + (":%d" % parts.port if parts.port else ""))))


def redacted(url):
    """url as the modules report it: any user:password@ replaced by ********@ (_validate.redact_url)."""
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url
    return urlunsplit(parts._replace(netloc=REDACTED + "@" + parts.netloc.rsplit("@", 1)[1]))


def image_url(lab, path=GZ_IMAGE):
    """The URL of a file (or fault path such as cut/FILE) on the image server of every lab host."""
    base = lab.images["files"][GZ_IMAGE]["url"].rsplit("/", 1)[0]
    return "%s/%s" % (base, path)


def image_sha256(lab, name=GZ_IMAGE):
    """The sha256 of a fixture image file."""
    return lab.images["files"][name]["sha256"]


def on_hosts(lab, function):
    """{host name: function(host)} for every lab host, run in parallel."""
    with ThreadPoolExecutor(max_workers=len(lab.hosts)) as pool:
        return dict(zip([host.name for host in lab.hosts], pool.map(function, lab.hosts)))


def snapshots(lab):
    """host_snapshot of every lab host, taken in parallel."""
    return on_hosts(lab, host_snapshot)


def tasks_play(name, tasks, gather_facts=False):
    """A play of tasks on every lab host."""
    return {"name": name, "hosts": "sidecar_hosts", "gather_facts": gather_facts, "tasks": tasks}


def role_play(name, variables):
    """A play of the role nspawn.nixos.sidecar on every lab host, as playbooks/site.yml runs it."""
    return {"name": name, "hosts": "sidecar_hosts", "gather_facts": True, "vars": variables,
            "roles": [{"role": "nspawn.nixos.sidecar"}]}


def sidecar_play(name, state="present", settings=None):
    """A play of the role with the fixture sidecar `name` (NixOS settings optional) on every lab host."""
    variables = {"sidecar_name": name, "sidecar_state": state, "sidecar_image_url": "{{ lab_image_url }}",
                 "sidecar_image_checksum": "{{ lab_image_sha256 }}"}
    if settings:
        variables["sidecar_nixos_settings"] = settings
    return {"name": "sidecar %s" % state, "hosts": "sidecar_hosts", "gather_facts": False,
            "roles": [{"role": "nspawn.nixos.sidecar", "vars": variables}]}


@contextlib.contextmanager
def provisioned(ansible_runner, name, settings=None):
    """The fixture sidecar `name` on every lab host for the duration; removed (sidecar_state=absent) at the end."""
    run = ansible_runner.playbook([sidecar_play(name, settings=settings)])
    assert run.rc == 0, str(run)
    try:
        yield run
    finally:
        gone = ansible_runner.playbook([sidecar_play(name, "absent")])
        assert gone.rc == 0, str(gone)


def explain(result, host=None):
    """The failed tasks of a PlaybookResult (of one host), in full, then its output."""
    lines = []
    for record in result.tasks:
        if record["status"] in ("failed", "unreachable") and (host is None or record["host"] == host):
            lines.append("FAILED %s on %s:\n%s" % (record["task"], record["host"], json.dumps(record["result"], indent=1, default=str)[-4000:]))
    return "\n".join(lines + [str(result)])


@dataclass
class FaultRun:
    """Snapshots of every lab host before and after one playbook (or several at once)."""

    before: dict
    results: list
    after: dict
    notes: dict = field(default_factory=dict)

    @property
    def result(self):
        """The playbook result, when one ran."""
        return self.results[0]

    def record(self, task, host):
        """The lab_json record of a task (name without the role prefix) on host, of the last run of it."""
        records = [record for result in self.results for record in result.results(task, host)]
        assert records, "task %r did not run on %s:\n%s" % (task, host, self.explain(host))
        return records[-1]

    def changes(self, host, ignore=(), new_dirs=False):
        """differences() of host's snapshots, without those whose path starts with a prefix in ignore
        (and without new directories, with new_dirs)."""
        return [change for change in differences(self.before[host], self.after[host])
                if not any(change.split(": ", 1)[-1].startswith(prefix) for prefix in ignore)
                and not (new_dirs and change.startswith("new: ") and change.endswith('"type": "dir", "uid": 0}'))]

    def explain(self, host):
        """Everything a reader needs when a test of host fails."""
        return "\n".join(explain(result, host) for result in self.results)


def run_fault(lab, ansible_runner, plays, **kwargs):
    """Snapshot every host, run plays on all of them, snapshot again."""
    before = snapshots(lab)
    result = ansible_runner.playbook(plays, **kwargs)
    return FaultRun(before, [result], snapshots(lab))


def run_at_once(lab, ansible_runner, plays, count=2, **kwargs):
    """Snapshot, run count ansible-playbook processes of plays at the same time, snapshot."""
    before = snapshots(lab)
    with ThreadPoolExecutor(max_workers=count) as pool:
        results = list(pool.map(lambda _: ansible_runner.playbook(plays, **kwargs), range(count)))
    return FaultRun(before, results, snapshots(lab))


def wait_for(predicate, timeout, interval=0.5):
    """Call predicate until it returns a true value or timeout seconds passed; return its last value."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(interval)


class Tally:
    """Counts of faults tried and of hosts found unchanged, merged into TALLY_PATH.

    The file belongs to one lab (one pytest session): a file of another lab is started afresh.
    """

    _lock = threading.Lock()

    def __init__(self, lab):
        self.lab_name = lab.name

    def add(self, suite, fault, host, unchanged, note=""):
        """Record one fault on one host: unchanged is True, False, or None (not required)."""
        with self._lock:
            data = self._load()
            entry = data["faults"].setdefault(suite, {}).setdefault(fault, {})
            entry[host] = {"unchanged": unchanged, **({"note": note} if note else {})}
            runs = [outcome for faults in data["faults"].values() for hosts in faults.values() for outcome in hosts.values()]
            data["totals"] = {
                "faults": sum(len(faults) for faults in data["faults"].values()),
                "fault_runs": len(runs),
                "host_unchanged_required": sum(1 for outcome in runs if outcome["unchanged"] is not None),
                "host_unchanged": sum(1 for outcome in runs if outcome["unchanged"] is True),
            }
            TALLY_PATH.parent.mkdir(parents=True, exist_ok=True)
            temporary = TALLY_PATH.with_suffix(".tmp")
            temporary.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
            os.replace(temporary, TALLY_PATH)

    def _load(self):
        try:
            data = json.loads(TALLY_PATH.read_text())
        except (OSError, ValueError):
            data = {}
        if data.get("lab") != self.lab_name:
            data = {"lab": self.lab_name, "faults": {}}
        return data


def judge_unchanged(tally, suite, fault, run, host, ignore=(), why="", new_dirs=False):
    """Record whether host is unchanged by the fault (apart from ignore, see FaultRun.changes), then assert it."""
    changes = run.changes(host, ignore, new_dirs)
    tally.add(suite, fault, host, not changes, why)
    assert not changes, "the host changed (%s):\n  %s\n%s" % (fault, "\n  ".join(changes[:50]), run.explain(host)[-8000:])
