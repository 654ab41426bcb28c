"""Shared pieces of the benchmarks: paths, bench labs, timed Ansible runs, host resets, statistics, Markdown.

Used by run.py (`make bench`) and module_noop.py. Needs tests/ on sys.path (PYTHONPATH=tests)
for the lab API and its Ansible runner (tests/lab/ansible_runner.py).
"""

import contextlib
import json
import os
import platform
import resource
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
CHECKOUT = BENCH_DIR.parent
for _path in (CHECKOUT / "tests",):
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

# After the sys.path lines above: tests/lab (the lab API and its Ansible runner).
# pylint: disable=wrong-import-position
from ansible.release import __version__ as ANSIBLE_VERSION  # noqa: E402
from lab import Lab, cgroups, images  # noqa: E402
from lab.mounts import fs_type  # noqa: E402
# OUTPUT_DIR: run.py uses it as benchlib.OUTPUT_DIR.
from lab.ansible_runner import CALLBACKS_DIR, OUTPUT_DIR, AnsibleRunner  # noqa: E402,F401  # pylint: disable=unused-import
# pylint: enable=wrong-import-position

SITE_PLAYBOOK = CHECKOUT / "playbooks" / "site.yml"
IMAGE_FILE = images.FIXTURE_IMAGE_FILES[0]      # the fixture image, .tar.xz (a key of lab.images["files"])
# BENCH_LAB_PREFIX: another prefix, so that two checkouts on one machine can run benchmarks at once.
LAB_PREFIX = os.environ.get("BENCH_LAB_PREFIX", "bench-")
# Actions that run on the controller only (no module is sent to the managed host).
CONTROLLER_ACTIONS = frozenset((
    "set_fact", "assert", "debug", "fail", "meta", "include_vars", "include_tasks", "import_tasks", "include_role",
    "import_role", "add_host", "group_by", "set_stats", "pause", "validate_argument_spec", "import_playbook",
))


class BenchError(RuntimeError):
    """Something broke functionally (a converge failed, a no-op changed something, a reset left debris)."""


# -- statistics and text ----------------------------------------------------------------------

def median(values):
    """The median, or None for no values."""
    return statistics.median(values) if values else None


def summary(values, digits=2):
    """'median / min / max' of seconds (or '-')."""
    if not values:
        return "-"
    return " / ".join("%.*f" % (digits, value) for value in (statistics.median(values), min(values), max(values)))


def ratio(numerator, denominator):
    """'N.NN×' or '-'."""
    if not numerator or not denominator:
        return "-"
    return "%.2f×" % (numerator / denominator)


def markdown_table(header, rows):
    """A GitHub Markdown table (cells are str()-ed, '|' escaped)."""
    def line(cells):
        return "| " + " | ".join(str(cell).replace("|", "\\|") for cell in cells) + " |"
    return "\n".join([line(header), line(["---"] * len(header))] + [line(row) for row in rows])


def print_table(header, rows, title=None):
    """The same table as aligned text on stdout."""
    if title:
        print("\n" + title)
    widths = [max(len(str(row[index])) for row in list(rows) + [header]) for index in range(len(header))]
    for row in [header] + list(rows):
        print("  " + "  ".join(str(cell).ljust(width) for cell, width in zip(row, widths)).rstrip())
    sys.stdout.flush()


def load_average():
    """This machine's load average (1/5/15 min) as text."""
    return "/".join("%.2f" % value for value in os.getloadavg())


# -- task records (lab_json) ----------------------------------------------------------------

def short_action(action):
    """'ansible.builtin.set_fact' -> 'set_fact'."""
    return str(action).rsplit(".", 1)[-1]


def ran(records):
    """Task records that ran (not skipped)."""
    return [record for record in records if record["status"] != "skipped"]


def is_module_call(record):
    """Did this task send a module to the managed host (not a controller-only action)?"""
    return short_action(record["action"]) not in CONTROLLER_ACTIONS


# -- Ansible runs -------------------------------------------------------------------------------

@dataclass
class Run:
    """One timed ansible-playbook run."""

    seconds: float                                  # the whole ansible-playbook process
    records: list = field(default_factory=list)     # timing_records() (task, action, host, status, changed, seconds)
    stats: dict = field(default_factory=dict)       # host -> ok/changed/failures/...
    output: str = ""
    cpu: float = 0.0                                # CPU seconds (user + system) of ansible-playbook and its children

    @property
    def task_seconds(self):
        """All task results' seconds together (hosts run in parallel: with several hosts, more than the wall time)."""
        return sum(record["seconds"] for record in self.records)

    @property
    def outside_tasks(self):
        """Seconds of ansible-playbook outside any task (one host): start, loading, templating, recap."""
        return self.seconds - self.task_seconds

    @property
    def changed(self):
        """Number of changed task results over all hosts."""
        return sum(host.get("changed", 0) for host in self.stats.values())


def children_cpu():
    """CPU seconds (user + system) of this process's waited-for children so far, as the kernel accounts them
    (getrusage(RUSAGE_CHILDREN)): the difference around one subprocess run (nothing else running meanwhile) is that
    process's own CPU time plus that of the children it waited for — for ansible-playbook its forks and their ssh and
    local commands, not the detached SSH ControlPersist master."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def hosts_cpu(hosts):
    """CPU seconds used so far by everything in the lab hosts' cgroup folders (systemd, importd, sshd, the module runs,
    the machine they start), from cgroup v2's cpu.stat usage_usec, which the kernel keeps for every cgroup2 folder with
    or without the cpu controller (Documentation/admin-guide/cgroup-v2.rst, "cpu.stat"); None where no cgroup2
    hierarchy holds the folders."""
    total = 0.0
    for host in hosts:
        stats = [folder / "cpu.stat" for folder in cgroups.existing(host.cgroup) if fs_type(folder.parent) == "cgroup2"]
        if not stats or not stats[0].exists():
            return None
        for line in stats[0].read_text(encoding="utf-8").splitlines():
            key, _sep, value = line.partition(" ")
            if key == "usage_usec":
                total += int(value) / 1e6
    return total


# Goals of issue 14, printed by the benchmarks (no test fails on them).
GOALS = {"P1": 1.25, "P2": 3.0, "P3": 1.25}


def goal(name, value):
    """'met (≤ 1.25×)' or 'missed (> 1.25×)' for a ratio against GOALS[name]."""
    if value is None:
        return "-"
    limit = GOALS[name]
    return "%s %s (%.2f× against ≤ %.2f×)" % (name, "met" if value <= limit else "missed", value, limit)


def fleet_estimate(cpu_per_host, wall_one_host, hosts=1000, forks=50, cpus=None):
    """Estimated wall seconds of one run on `hosts` hosts with `forks` forks on one controller with `cpus` CPUs
    (default: this machine's): the larger of the controller's CPU work spread over its CPUs (hosts × CPU seconds
    per host / CPUs) and the hosts' own time (hosts / forks batches of one host's wall time, as the linear strategy
    runs every task on `forks` hosts at a time). Returns (estimate, cpu-bound seconds, latency-bound seconds)."""
    cpus = cpus or os.cpu_count()
    cpu_bound = hosts * cpu_per_host / cpus
    latency_bound = -(-hosts // forks) * wall_one_host
    return max(cpu_bound, latency_bound), cpu_bound, latency_bound


def timing_env(path):
    """Environment that loads the lab_json callback (tests/integration/callback_plugins) and makes it write to `path`."""
    return {"ANSIBLE_CALLBACK_PLUGINS": str(CALLBACKS_DIR), "NSPAWN_LAB_ANSIBLE_JSON": str(path),
            "ANSIBLE_DEPRECATION_WARNINGS": "False"}


def timing_records(tasks):
    """lab_json's task records as the benchmarks read them: {task, action, host, status, changed, seconds, msg}, the
    status "ok" (changed or not), "failed", "ignored" (failed, ignore_errors), "skipped" or "unreachable"."""
    records = []
    for task in tasks:
        status = "ok" if task["status"] == "changed" else task["status"]
        if status == "failed" and task.get("ignored"):
            status = "ignored"
        records.append({"task": task["task"], "action": task["action"], "host": task["host"], "status": status,
                        "changed": task["changed"], "seconds": task["seconds"],
                        "msg": str(task["result"].get("msg", ""))[:2000]})
    return records


def read_timing(path):
    """The records lab_json wrote to `path` ([] when it wrote none), as timing_records() gives them."""
    path = Path(path)
    return timing_records(json.loads(path.read_text(encoding="utf-8"))["tasks"]) if path.exists() else []


def playbook(inventory, plays, limit=None, extra_vars=None, forks=None, what="ansible-playbook"):
    """Run ansible-playbook (plays as data, or a path) through tests/lab/ansible_runner.py with
    per-task timing; return a Run. Raises BenchError when it fails."""
    env = {"ANSIBLE_DEPRECATION_WARNINGS": "False"}
    if forks:
        env["ANSIBLE_FORKS"] = str(forks)
    before = children_cpu()
    result = AnsibleRunner(inventory, env=env).playbook(plays, limit=limit, extra_vars=extra_vars)
    cpu = children_cpu() - before
    records = timing_records(result.tasks)   # the runner's lab_json records, with each task's seconds
    run = Run(result.seconds, records, result.stats, result.stdout[-4000:] + result.stderr[-2000:], cpu)
    if result.rc != 0:
        raise BenchError("%s failed (rc=%d, limit %s):\n%s" % (what, result.rc, limit, run.output))
    return run


def role(inventory, limit, extra_vars=None, forks=None, what="the role"):
    """playbooks/site.yml (nspawn.nixos.sidecar, as a user runs it) on the hosts matching `limit`."""
    return playbook(inventory, SITE_PLAYBOOK, limit=limit, extra_vars=extra_vars, forks=forks, what=what)


# -- labs and hosts -----------------------------------------------------------------------------

@contextlib.contextmanager
def bench_lab(suffix, releases, count=1):
    """Boot the lab bench-<suffix> (replacing a stale one), yield it, and down it at the end,
    also on an error or Ctrl-C."""
    lab = Lab(LAB_PREFIX + suffix, log=lambda message: print("  lab: " + message))
    started = time.monotonic()
    print("booting lab %s: %d host(s) of Debian %s..." % (lab.name, count * len(releases), ", ".join(releases)))
    lab.up(releases=list(releases), count=count, replace=True)
    print("lab %s up in %.1f s" % (lab.name, time.monotonic() - started))
    try:
        yield lab
    finally:
        print("downing lab %s..." % lab.name)
        lab.down()


def interleaved_hosts(lab):
    """The lab's hosts with releases alternating (12, 13, 12, 13, ...), so every prefix mixes them."""
    by_release = {}
    for host in lab.hosts:
        by_release.setdefault(host.version, []).append(host)
    columns = [by_release[version] for version in sorted(by_release)]
    return [host for row in zip(*columns) for host in row]


# Removes machine NAME, its image, settings, origin record, staged copies and importd's hidden
# cache images (.tar-<URL>...), then lists what is left ("LEFT ..." lines).
RESET_SCRIPT = r"""
name=$1
machinectl terminate "$name" >/dev/null 2>&1
for _ in $(seq 150); do machinectl show "$name" >/dev/null 2>&1 || break; sleep 0.2; done
machinectl disable "$name" >/dev/null 2>&1
machinectl list-images --all --no-legend --no-pager | while read -r image _; do
  case "$image" in
    "$name"|.tar-*|.raw-*)
      for _ in $(seq 20); do machinectl remove "$image" >/dev/null 2>&1 && break; sleep 0.3; done ;;
  esac
done
rm -f "/etc/systemd/nspawn/$name.nspawn" "/var/lib/nspawn-nixos/origin/$name.json"
rm -rf /var/tmp/nspawn-nixos
machinectl show "$name" >/dev/null 2>&1 && echo "LEFT machine $name"
machinectl list-images --all --no-legend --no-pager | while read -r image _; do
  case "$image" in "$name"|.tar-*|.raw-*) echo "LEFT image $image" ;; esac
done
for path in "/etc/systemd/nspawn/$name.nspawn" "/var/lib/nspawn-nixos/origin/$name.json" "/var/lib/machines/$name"; do
  [ -e "$path" ] && echo "LEFT file $path"
done
[ "$(systemctl is-enabled "systemd-nspawn@$name.service" 2>/dev/null)" = enabled ] && echo "LEFT enabled systemd-nspawn@$name"
true
"""


def reset_host(host, name):
    """Bring `host` back to a state without machine `name` (as before a first converge), by hand
    (nsenter, no Ansible); BenchError if anything is left."""
    done = host.run(["bash", "-c", RESET_SCRIPT, "reset", name], timeout=120)
    left = [line for line in done.stdout.splitlines() if line.startswith("LEFT ")]
    if done.returncode != 0 or left:
        raise BenchError("%s: reset left %s (rc=%d) %s" % (host.name, left, done.returncode, done.stderr[-1000:]))


def reset_hosts(hosts, name):
    """reset_host() on every host, in parallel."""
    with ThreadPoolExecutor(max_workers=max(1, len(hosts))) as pool:
        for future in [pool.submit(reset_host, host, name) for host in hosts]:
            future.result()


# -- where it ran -------------------------------------------------------------------------------

def _cpuinfo():
    models, count = [], 0
    with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
        for line in cpuinfo:
            key, _sep, value = line.partition(":")
            if key.strip() == "processor":
                count += 1
            elif key.strip() == "model name" and value.strip() not in models:
                models.append(value.strip())
    return ", ".join(models) or platform.processor() or "?", count


def _meminfo_gib():
    with open("/proc/meminfo", encoding="utf-8") as meminfo:
        for line in meminfo:
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) / 1024 / 1024
    return 0.0


def _os_release():
    try:
        for line in Path("/etc/os-release").read_text(encoding="utf-8").splitlines():
            if line.startswith("PRETTY_NAME="):
                return line.split("=", 1)[1].strip().strip('"')
    except OSError:
        pass
    return "?"


def machine_info():
    """This machine and the controller's software, as (label, value) pairs."""
    model, count = _cpuinfo()
    return [
        ("CPU", "%s, %d CPUs" % (model, count)),
        ("RAM", "%.1f GiB" % _meminfo_gib()),
        ("kernel", platform.release()),
        ("controller", "%s, Python %s, ansible-core %s" % (_os_release(), platform.python_version(), ANSIBLE_VERSION)),
    ]


def lab_hosts_info(lab):
    """'name: Debian X.Y, systemd N' of every lab host."""
    lines = []
    for host in lab.hosts:
        version = host.run(["cat", "/etc/debian_version"]).stdout.strip() or host.version
        lines.append("%s: Debian %s, systemd %s" % (host.name, version, host.systemd_version))
    return lines
