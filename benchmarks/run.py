"""The benchmarks of nspawn.nixos on lab hosts (`make bench`): figures on stdout and in benchmarks/RESULTS.md.

    PYTHONPATH=tests .venv/bin/python benchmarks/run.py                    # all five (15-30 min)
    PYTHONPATH=tests .venv/bin/python benchmarks/run.py --only 1,2 --runs 3
    make bench BENCH_ARGS='--only 3 --fleet 1,2,4'

    1  first converge of the role on one host vs. the article's manual sequence (the floor)
    2  no-op re-run of the role vs. `ansible -m ping`; tasks and module calls; per-task profile
    3  fleet scaling: first converge on 1, 2, 4, 8 hosts (forks = hosts)
    4  image distribution: every host downloads vs. sidecar_image_source=controller (bytes, time)
    5  each module's no-op call vs. ping (module_noop.py)

Each benchmark boots its own lab (bench-*) and downs it at the end, also on an error or Ctrl-C.
Slowness never fails a benchmark; a functional failure (a converge that fails, a no-op that
changes something, a reset that leaves debris) is reported in its section and makes the exit
status 1. RESULTS.md keeps the sections of benchmarks that did not run this time.
"""

import argparse
import datetime
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import tempfile
import time
import traceback
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import benchlib  # benchmarks/ is sys.path[0]; benchlib puts tests/ and tests/integration on sys.path
import module_noop
from benchlib import BenchError, bench_lab, markdown_table, median, print_table, ratio, reset_host, reset_hosts

NAME = "nixos"   # the role's default sidecar_name; the floor uses it too
# The role's default sidecar_pull_poll (seconds between the checks of the async pull), for the reading of benchmark 1.
ROLE_POLL = re.search(r"^sidecar_pull_poll: (\d+)$", (benchlib.CHECKOUT / "roles/sidecar/defaults/main.yml").read_text(), re.M).group(1)
DEFAULT_RUNS = {1: 5, 2: 5, 3: 2, 4: 2, 5: 10}
RELEASE = "13"   # benchmarks 1 and 2 run on one Debian 13 host
IMAGE_SERVER = benchlib.CHECKOUT / "tests" / "lab" / "hostfs" / "usr" / "local" / "lib" / "nspawn-nixos-lab" / "image_server.py"
SENT = re.compile(r"sent (\d+) body bytes of (\S+)")
RESULTS_HEADER = """# Benchmark results

Written by `benchmarks/run.py` (`make bench`); what each benchmark measures and how to read
it: [README.md](README.md). Seconds; "median (min–max)" over the runs given. Each section
names the command, the machine and the load it ran with: the lab hosts share the machine's
CPUs, so the figures move with whatever else runs on it.
"""

# The article's manual sequence, run on the host with `ssh HOST bash -s -- NAME URL < script`.
# Prints "STEP <name> <epoch seconds>" after each step.
FLOOR_SCRIPT = r"""set -eu
name=$1 url=$2
step() { echo "STEP $1 $(date +%s.%N)"; }
step begin
if [ "$(systemctl --version | awk 'NR == 1 { print $2 }')" -ge 256 ]; then
  importctl pull-tar --class=machine --verify=no -q "$url" "$name"
else
  machinectl pull-tar --verify=no "$url" "$name"
fi
step pull
mkdir -p /etc/systemd/nspawn
printf '[Network]\nVirtualEthernet=no\n' > "/etc/systemd/nspawn/$name.nspawn"
step settings
machinectl start "$name"
step start
machinectl enable "$name"
step enable
until systemd-run -M "$name" --wait --pipe -q true >/dev/null 2>&1; do sleep 0.1; done
step wait
"""
# Role tasks that do what a floor step does (the rest is what the role does beyond the floor).
FLOOR_EQUIVALENTS = {
    "Fetch, verify and import the image": "pull",
    "Write the machine settings file": "settings",
    "Start the machine and enable it at boot": "start + enable + wait",
}


@dataclass
class Section:  # pylint: disable=too-many-instance-attributes
    """One benchmark's part of RESULTS.md."""

    number: int
    title: str
    blocks: list = field(default_factory=list)   # Markdown paragraphs and tables
    hosts: list = field(default_factory=list)    # lab_hosts_info() lines
    load_before: str = ""
    load_after: str = ""
    started: str = ""
    seconds: float = 0.0
    error: str = ""

    def table(self, header, rows, caption=None):
        """Add a table (and print it)."""
        print_table(header, rows, caption)
        self.blocks.append(("%s\n\n" % caption if caption else "") + markdown_table(header, rows))

    def text(self, paragraph):
        """Add a paragraph (and print it)."""
        print("\n" + paragraph)
        self.blocks.append(paragraph)

    def render(self, command, machine):
        """The section's Markdown, between its markers."""
        lines = ["<!-- bench %d start -->" % self.number, "## %d. %s" % (self.number, self.title), "",
                 "- command: `%s`" % command,
                 "- date: %s, %.0f s including the lab's boot and teardown" % (self.started, self.seconds)]
        lines += ["- %s: %s" % (label, value) for label, value in machine]
        lines += ["- lab hosts: %s" % "; ".join(self.hosts or ["-"]),
                  "- load average (1/5/15 min): %s before, %s after" % (self.load_before, self.load_after), ""]
        if self.error:
            lines += ["**FAILED**: %s" % self.error.strip().replace("\n", "  \n"), ""]
        for block in self.blocks:
            lines += [block, ""]
        return "\n".join(lines + ["<!-- bench %d end -->" % self.number])


def fmt(values, digits=2):
    """'median (min–max)' of seconds."""
    if not values:
        return "-"
    if len(values) == 1:
        return "%.*f" % (digits, values[0])
    return "%.*f (%.*f–%.*f)" % (digits, median(values), digits, min(values), digits, max(values))


def strip_role(task):
    """'nspawn.nixos.sidecar : Preflight' -> 'Preflight'."""
    return task.split(" : ", 1)[-1]


def step_name(task):
    """A task's name without its ' | part' suffix: the role's image fetch is one step in several tasks
    ("Fetch, verify and import the image | start the job", "... | wait for the job", ...)."""
    return task.split(" | ", 1)[0]


def per_task(runs, host=None, steps=False):
    """{task: {'action', 'status', 'seconds': [per run]}} from the records of several runs (one host); with steps,
    the tasks of one step (step_name) together."""
    tasks = {}
    for run in runs:
        seen = {}
        for record in run.records:
            if host and record["host"] != host:
                continue
            name = step_name(strip_role(record["task"])) if steps else strip_role(record["task"])
            entry = tasks.setdefault(name, {"action": benchlib.short_action(record["action"]), "status": set(), "seconds": []})
            entry["status"].add(record["status"])
            seen[name] = seen.get(name, 0.0) + record["seconds"]
        for name, seconds in seen.items():
            tasks[name]["seconds"].append(seconds)
    return tasks


def profile_rows(runs, host=None, top=10):
    """The `top` tasks by median seconds: (rank, task, action, status, median s, share of the task total)."""
    tasks = per_task(runs, host)
    total = sum(median(entry["seconds"]) for entry in tasks.values())
    ordered = sorted(tasks.items(), key=lambda item: median(item[1]["seconds"]), reverse=True)[:top]
    return [(rank, name, entry["action"], "/".join(sorted(entry["status"])), "%.2f" % median(entry["seconds"]),
             "%.0f %%" % (100 * median(entry["seconds"]) / total if total else 0))
            for rank, name, entry in ((rank, name, entry) for rank, (name, entry) in enumerate(ordered, 1))], total


PROFILE_HEADER = ("#", "task", "action", "status", "median s", "share of task time")


def check_converged(run, hosts, what):
    """A first converge must have fetched the image and started the machine on every host."""
    for host in hosts:
        changed = {strip_role(record["task"]) for record in run.records if record["host"] == host and record["status"] == "ok"
                   and record["changed"]}
        if "Start the machine and enable it at boot" not in changed:
            raise BenchError("%s: %s did not start the machine (a first converge must): changed tasks %s" % (what, host, sorted(changed)))


def cpu_table(runs, hosts, what, baseline=None):
    """(header, rows, caption) of P7: the controller's CPU seconds per host of `runs` (ansible-playbook and its children,
    benchlib.children_cpu) and the estimated wall time of the same run on 1,000 hosts at forks 50 on one controller.
    With `baseline` (runs of the one-task ping playbook on the same hosts), also the CPU without the process's fixed
    start (Python, ansible-core, inventory), which a run on 1,000 hosts pays once, not per host."""
    cpu = [run.cpu / hosts for run in runs]
    wall = [run.seconds for run in runs]
    rows = []
    for label, per_host in (("with ansible-playbook's start", median(cpu)),
                            ("without it (minus the ping playbook's CPU)", median(cpu) - median([run.cpu for run in baseline]) / hosts
                             if baseline else None)):
        if per_host is None:
            continue
        estimate, cpu_bound, latency_bound = benchlib.fleet_estimate(per_host, median(wall))
        rows.append((what, label, "%.2f" % per_host, fmt(wall), "%.0f" % cpu_bound, "%.0f" % latency_bound,
                     "%.0f s (%.1f min, %s)" % (estimate, estimate / 60, "CPU-bound" if cpu_bound >= latency_bound else "latency-bound")))
    if baseline:
        rows.append(("one-task ping playbook", "(the fixed start)", fmt([run.cpu / hosts for run in baseline]), fmt([run.seconds for run in baseline]),
                     "-", "-", "-"))
    return (("run", "controller CPU", "CPU s per host (median)", "wall s", "1,000 hosts at forks 50: CPU-bound s", "latency-bound s", "estimate"),
            rows,
            "P7, the controller's CPU (user + system seconds of ansible-playbook and every process it waited for, from the kernel's "
            "accounting of this benchmark's children, getrusage(RUSAGE_CHILDREN) around each run) for %d host(s); estimate for "
            "1,000 hosts at forks 50 on a controller with %d CPUs = max(1,000 × CPU per host / CPUs, 1,000 / 50 × the wall time of "
            "one host):" % (hosts, os.cpu_count()))


# -- 1: first converge vs. the floor -----------------------------------------------------------

def floor_run(host, url):
    """Run FLOOR_SCRIPT over SSH; return (wall seconds, {step: seconds})."""
    argv = ["ssh", *host.ssh_args, "-o", "BatchMode=yes", "root@" + host.name, "bash -s -- %s %s" % (NAME, shlex.quote(url))]
    started = time.monotonic()
    done = subprocess.run(argv, input=FLOOR_SCRIPT, capture_output=True, text=True, timeout=900, check=False)
    wall = time.monotonic() - started
    if done.returncode != 0:
        raise BenchError("the floor script failed on %s (rc=%d): %s %s" % (host.name, done.returncode, done.stdout[-2000:], done.stderr[-2000:]))
    marks = [line.split()[1:] for line in done.stdout.splitlines() if line.startswith("STEP ")]
    steps = {name: float(stamp) - float(previous) for (dummy, previous), (name, stamp) in zip(marks, marks[1:])}
    return wall, steps


def bench_converge(args, section):
    """Benchmark 1."""
    runs = args.runs or DEFAULT_RUNS[1]
    with bench_lab("converge", [RELEASE]) as lab:
        host = lab.hosts[0]
        section.hosts = benchlib.lab_hosts_info(lab)
        url = lab.images["files"][benchlib.IMAGE_FILE]["url"]
        extra = {"sidecar_image_url": "{{ lab_image_url }}"}
        reset_host(host, NAME)
        role_runs, role_walls, floor_walls, floor_steps, rows = [], [], [], [], []
        for index in range(runs):
            order = ("role", "floor") if index % 2 == 0 else ("floor", "role")
            walls = {}
            for kind in order:
                if kind == "role":
                    run = benchlib.role(lab.inventory, host.name, extra, what="first converge of the role")
                    check_converged(run, [host.name], "first converge")
                    role_runs.append(run)
                    walls[kind] = run.seconds
                else:
                    walls[kind], steps = floor_run(host, url)
                    floor_steps.append(steps)
                reset_host(host, NAME)
                print("  run %d: %s %.2f s" % (index + 1, kind, walls[kind]))
            role_walls.append(walls["role"])
            floor_walls.append(walls["floor"])
            rows.append((index + 1, " then ".join(order), "%.2f" % walls["role"], "%.2f" % walls["floor"], ratio(walls["role"], walls["floor"])))
    section.table(("run", "order", "role s", "floor s", "role / floor"), rows, "Every run (host reset to no machine, no image, no cache before each):")
    section.table(("", "role (playbooks/site.yml)", "floor (shell script over SSH)", "role / floor"),
                  [("first converge, s", fmt(role_walls), fmt(floor_walls), ratio(median(role_walls), median(floor_walls)))],
                  "Median of %d runs each, alternating:" % runs)
    section.text("Goal: %s." % benchlib.goal("P1", median(role_walls) / median(floor_walls)))
    section.table(*cpu_table(role_runs, 1, "first converge"))
    tasks = per_task(role_runs, host.name, steps=True)
    step_rows = []
    for task, step in FLOOR_EQUIVALENTS.items():
        floor_values = [sum(steps.get(part.strip(), 0.0) for part in step.split("+")) for steps in floor_steps]
        step_rows.append((step, task, fmt(tasks.get(task, {}).get("seconds", [])), fmt(floor_values)))
    ran_tasks = {name: entry for name, entry in tasks.items() if entry["status"] != {"skipped"}}
    beyond = {name: entry for name, entry in ran_tasks.items() if name not in FLOOR_EQUIVALENTS}
    beyond_seconds = [sum(values) for values in zip(*(entry["seconds"] for entry in beyond.values()))]
    overhead = [run.outside_tasks for run in role_runs]
    step_rows.append(("-", "%d other tasks that ran (beyond the floor)" % len(beyond), fmt(beyond_seconds), "-"))
    step_rows.append(("-", "ansible-playbook outside tasks (start, parsing, templating, SSH setup, play recap)", fmt(overhead), "-"))
    section.table(("floor step", "role task", "role s", "floor s"), step_rows, "Where the time goes, step by step (median, min–max):")
    rows, total = profile_rows(role_runs, host.name)
    section.table(PROFILE_HEADER, rows, "The role's 10 slowest tasks in a first converge (per-task time from the lab_json callback; "
                                        "all tasks together %.2f s, median):" % total)
    section.text(converge_reading(role_walls, floor_walls, tasks, floor_steps, beyond, overhead))


def converge_reading(role_walls, floor_walls, tasks, floor_steps, beyond, overhead):
    """The 'where the time goes' paragraph of benchmark 1, from the figures."""
    def task_median(name):
        return median(tasks.get(name, {}).get("seconds", [])) or 0.0
    pull_floor = median([steps.get("pull", 0.0) for steps in floor_steps])
    start_floor = median([steps.get("start", 0.0) + steps.get("enable", 0.0) + steps.get("wait", 0.0) for steps in floor_steps])
    slowest_beyond = sorted(beyond.items(), key=lambda item: median(item[1]["seconds"]), reverse=True)[:4]
    return (
        "**Where the time goes.** The role takes %.2f s against the floor's %.2f s (median), %.2f s more. "
        "Fetching the image: %.2f s in the role against %.2f s in the floor. The module pulls the same way (`importctl pull-tar` "
        "or `machinectl pull-tar`), but as an async job (sidecar_pull_async), in four tasks: async_wrapper starts it, one task waits "
        "on the host until the job's results file holds the result (checked every 0.25 s, one SSH call per 30 s at most; no "
        "async_status poll every sidecar_pull_poll = %s s), async_status reads the result and a raw `rm` removes the file; the module "
        "then records the image's origin. Starting, enabling and waiting: %.2f s against %.2f s (the role waits until `systemctl is-system-running` in "
        "the machine says running or degraded, the floor only until `systemd-run -M` can run a command). "
        "What the role does beyond the floor (%d tasks that ran, %.2f s median): preflight (one raw probe of the host and the "
        "sidecar's files instead of fact gathering, one assert), systemd-container (installed when the probe found no machinectl), "
        "a check-mode plan of the image (only where the probe cannot settle it, and in check mode), a raw look for an earlier NixOS "
        "module (only after the image was fetched), and the verification (an assert on the machine task's result, or nspawn_info "
        "when something changed the machine "
        "after that task); slowest: %s. "
        "ansible-playbook itself (start, loading the role and its argument spec, templating, the first SSH connection, outside "
        "any task) takes %.2f s."
        % (median(role_walls), median(floor_walls), median(role_walls) - median(floor_walls), task_median("Fetch, verify and import the image"),
           pull_floor, ROLE_POLL, task_median("Start the machine and enable it at boot"), start_floor, len(beyond),
           median([sum(values) for values in zip(*(entry["seconds"] for entry in beyond.values()))]) or 0.0,
           ", ".join("%s (%.2f s)" % (name, median(entry["seconds"])) for name, entry in slowest_beyond), median(overhead)))


# -- 2: no-op re-run vs. ping ------------------------------------------------------------------

def bench_noop(args, section):
    """Benchmark 2."""
    runs = args.runs or DEFAULT_RUNS[2]
    extra = {"sidecar_image_url": "{{ lab_image_url }}"}
    ping_play = [{"name": "ping", "hosts": "sidecar_hosts", "gather_facts": False, "tasks": [{"name": "Ping", "ansible.builtin.ping": {}}]}]
    with bench_lab("noop", [RELEASE]) as lab, tempfile.TemporaryDirectory(prefix="bench-adhoc-", dir=benchlib.OUTPUT_DIR) as work:
        host = lab.hosts[0]
        section.hosts = benchlib.lab_hosts_info(lab)
        adhoc = module_noop.Bench(lab.inventory, work)
        check_converged(benchlib.role(lab.inventory, host.name, extra, what="first converge"), [host.name], "first converge")
        # Warm-up: page cache, the SSH master connection's first use.
        benchlib.role(lab.inventory, host.name, extra, what="no-op re-run")
        adhoc.adhoc(host.name, "ansible.builtin.ping")
        benchlib.playbook(lab.inventory, ping_play, limit=host.name, what="ping playbook")
        role_runs, pings, ping_runs = [], [], []
        for index in range(runs):
            run = benchlib.role(lab.inventory, host.name, extra, what="no-op re-run")
            if run.changed:
                changed = [strip_role(record["task"]) for record in run.records if record["changed"]]
                raise BenchError("the re-run of the role changed %d thing(s), it should change nothing: %s" % (run.changed, changed))
            role_runs.append(run)
            pings.append(adhoc.adhoc(host.name, "ansible.builtin.ping")[0])
            ping_runs.append(benchlib.playbook(lab.inventory, ping_play, limit=host.name, what="ping playbook"))
            print("  run %d: role %.2f s, ansible -m ping %.2f s, ping playbook %.2f s" % (index + 1, run.seconds, pings[-1], ping_runs[-1].seconds))
    role_walls = [run.seconds for run in role_runs]
    ping_plays = [run.seconds for run in ping_runs]
    section.table(("command", "wall s", "role / this"), [
        ("role re-run, nothing to do (ansible-playbook playbooks/site.yml)", fmt(role_walls), "1.00×"),
        ("`ansible HOST -m ping` (floor)", fmt(pings), ratio(median(role_walls), median(pings))),
        ("ansible-playbook of a one-task ping playbook (second floor)", fmt(ping_plays), ratio(median(role_walls), median(ping_plays))),
    ], "Median (min–max) of %d runs each, interleaved:" % runs)
    section.text("Goal: %s." % benchlib.goal("P2", median(role_walls) / median(pings)))
    section.table(*cpu_table(role_runs, 1, "no-op re-run", baseline=ping_runs))
    records = role_runs[-1].records
    ran = benchlib.ran(records)
    calls = [record for record in ran if benchlib.is_module_call(record)]
    by_action = {}
    for record in calls:
        by_action[benchlib.short_action(record["action"])] = by_action.get(benchlib.short_action(record["action"]), 0) + 1
    section.table(("tasks in the play", "ran (not skipped)", "module calls on the host", "controller-only (set_fact, assert, include_vars, ...)"),
                  [(len(records), len(ran), len(calls), len(ran) - len(calls))],
                  "The no-op path (counted from the task results of the last run):")
    section.text("Module calls on the no-op path, by action: %s."
                 % ", ".join("%s × %d" % item for item in sorted(by_action.items(), key=lambda item: -item[1])))
    rows, total = profile_rows(role_runs, host.name)
    section.table(PROFILE_HEADER, rows, "The 10 slowest tasks of the no-op re-run (all tasks together %.2f s, median):" % total)
    section.text(noop_reading(role_runs, pings, ping_runs, calls, ran))


def noop_reading(role_runs, pings, ping_runs, calls, ran):
    """The 'where the time goes' paragraph of benchmark 2, from the figures."""
    task_totals = [run.task_seconds for run in role_runs]
    outside = median([run.outside_tasks for run in role_runs])
    module_totals = [sum(record["seconds"] for record in run.records if record["status"] != "skipped" and benchlib.is_module_call(record))
                     for run in role_runs]
    facts = [sum(record["seconds"] for record in run.records
                 if benchlib.short_action(record["action"]) in ("gather_facts", "setup") or record["task"].startswith("Probe the host"))
             for run in role_runs]
    role_walls, ping_plays = [run.seconds for run in role_runs], [run.seconds for run in ping_runs]
    startup = median([run.outside_tasks for run in ping_runs])
    return (
        "**Where the time goes.** A no-op re-run takes %.2f s, %.1f× `ansible -m ping` (%.2f s) and %.1f× a one-task ping playbook "
        "(%.2f s). Its tasks take %.2f s together (median): the %d module calls on the host %.2f s, of which the role's facts "
        "(its raw probe, which reads the sidecar's files too; fact gathering before) %.2f s and the other %d calls %.2f s each on average "
        "(SSH round trip with pipelining, "
        "Python start and AnsiballZ unpacking on the host, the module's own `machinectl`/`systemctl` calls); "
        "the %d controller-only tasks and the skipped tasks the rest. "
        "A re-run costs one module call per task that checks something on the host, so its price is the task count above times "
        "a module round trip, not any single slow step. Outside the tasks, "
        "ansible-playbook spends %.2f s (start, loading the collection, the role's argument spec, inventory, templating, play recap); "
        "the ping playbook's process spends %.2f s outside its one task, so about %.2f s of that is the role's size (tasks to load "
        "and template, %d task results to report)."
        % (median(role_walls), median(role_walls) / median(pings), median(pings), median(role_walls) / median(ping_plays), median(ping_plays),
           median(task_totals), len(calls), median(module_totals), median(facts), len(calls) - 1,
           (median(module_totals) - median(facts)) / max(1, len(calls) - 1), len(ran) - len(calls), outside, startup,
           outside - startup, len(role_runs[-1].records)))


# -- 3: fleet scaling --------------------------------------------------------------------------

def fleet_floor(hosts, url):
    """The floor of benchmark 1 on all `hosts` at once (one thread and one SSH connection per host, as Ansible has
    one fork and one connection per host): (wall seconds until the last host is done, [per-host seconds])."""
    started = time.monotonic()
    with ThreadPoolExecutor(max_workers=len(hosts)) as pool:
        results = [future.result() for future in [pool.submit(floor_run, host, url) for host in hosts]]
    return time.monotonic() - started, [wall for wall, _steps in results]


def bench_fleet(args, section):  # pylint: disable=too-many-locals
    """Benchmark 3."""
    runs = args.runs or DEFAULT_RUNS[3]
    sizes = args.fleet
    extra = {"sidecar_image_url": "{{ lab_image_url }}"}
    walls, floors, cpus = {size: [] for size in sizes}, {size: [] for size in sizes}, {size: [] for size in sizes}
    fetches, starts = {size: [] for size in sizes}, {size: [] for size in sizes}
    # CPU seconds of each run, all hosts together: (controller, hosts) for the role and for the floor.
    used = {kind: {size: [] for size in sizes} for kind in ("role", "floor")}
    with bench_lab("fleet", ["12", "13"], count=(max(sizes) + 1) // 2) as lab:
        section.hosts = benchlib.lab_hosts_info(lab)
        ordered = benchlib.interleaved_hosts(lab)
        url = lab.images["files"][benchlib.IMAGE_FILE]["url"]
        reset_hosts(ordered, NAME)
        # Warm-up: the first pull on a freshly booted host is much faster than later ones (README), and with few runs
        # it would favour whichever of role and floor first meets a host of the size (hosts 2, 3-4 and 5-8 are new to
        # sizes 2, 4 and 8). One floor on every host first, not measured.
        fleet_floor(ordered, url)
        reset_hosts(ordered, NAME)
        for index in range(runs):
            for size in (sizes if index % 2 == 0 else list(reversed(sizes))):
                subset = ordered[:size]
                names = [host.name for host in subset]
                # Role and floor alternate too: which goes first changes from one size to the next and, for each size,
                # from one run to the next (by the size's place in --fleet, not in this run's order: that order is
                # reversed every other run, and with it the parity of the place, so that each size would keep its
                # order in every run; the first of the pair is the faster more often than not, see the README).
                for kind in (("role", "floor") if (index + sizes.index(size)) % 2 == 0 else ("floor", "role")):
                    controller_before, hosts_before = benchlib.children_cpu(), benchlib.hosts_cpu(subset)
                    if kind == "role":
                        run = benchlib.role(lab.inventory, ",".join(names), extra, forks=size, what="first converge on %d hosts" % size)
                        check_converged(run, names, "first converge on %d hosts" % size)
                        walls[size].append(run.seconds)
                        cpus[size].append(run.cpu / size)
                        fetches[size] += task_seconds(run, "Fetch, verify and import the image")
                        starts[size] += task_seconds(run, "Start the machine and enable it at boot")
                        seconds = run.seconds
                    else:
                        seconds, _per_host = fleet_floor(subset, url)
                        floors[size].append(seconds)
                    hosts_after = benchlib.hosts_cpu(subset)
                    used[kind][size].append((benchlib.children_cpu() - controller_before,
                                             None if hosts_before is None else hosts_after - hosts_before))
                    reset_hosts(subset, NAME)
                    print("  run %d: %d host(s) %s %.2f s" % (index + 1, size, kind, seconds))
    base = median(walls[sizes[0]]) / sizes[0]
    rows = [(size, size, "%d×12, %d×13" % ((size + 1) // 2, size // 2), fmt(walls[size]), fmt(floors[size]),
             ratio(median(walls[size]), median(floors[size])), "%.2f×" % (median(walls[size]) / (base * sizes[0])),
             fmt(cpus[size]), fmt(fetches[size]), fmt(starts[size])) for size in sizes]
    section.table(("hosts", "forks", "Debian", "role wall s", "fleet floor wall s", "role / floor",
                   "role vs. %d host%s" % (sizes[0], "s" if sizes[0] > 1 else ""), "controller CPU s per host",
                   "image fetch task per host s", "start task per host s"), rows,
                  "First converge, median (min–max) of %d run(s) per size, sizes in alternating order, role and floor alternating; "
                  "the fleet floor is benchmark 1's manual sequence on all the hosts at once, one SSH connection per host; "
                  "per-host task times over all hosts and runs; controller CPU from getrusage as in P7:" % runs)
    fleet_cpu_table(section, sizes, used, walls, floors)
    goals = ["%d host%s: %s" % (size, "s" if size > 1 else "", benchlib.goal("P3", median(walls[size]) / median(floors[size])))
             for size in sizes]
    section.text("Goal P3 (role / fleet floor ≤ %.2f× at every size): %s." % (benchlib.GOALS["P3"], "; ".join(goals)))
    largest = sizes[-1]
    estimate, cpu_bound, latency_bound = benchlib.fleet_estimate(median(cpus[largest]), median(walls[sizes[0]]))
    text = ("P7 from the fleet: %.2f controller CPU s per host at %d hosts (%.2f at %d); for 1,000 hosts at forks 50 on a "
            "controller with %d CPUs: %.0f s CPU-bound, %.0f s latency-bound, estimate %.0f s (%.1f min)."
            % (median(cpus[largest]), largest, median(cpus[sizes[0]]), sizes[0], os.cpu_count(), cpu_bound, latency_bound,
               estimate, estimate / 60))
    if len(sizes) > 1:
        # What one more host costs: the slope between the smallest and the largest fleet (the process's start is paid once).
        marginal = (median(cpus[largest]) * largest - median(cpus[sizes[0]]) * sizes[0]) / (largest - sizes[0])
        estimate, cpu_bound, latency_bound = benchlib.fleet_estimate(marginal, median(walls[sizes[0]]))
        text += (" One more host costs %.2f CPU s (the slope from %d to %d hosts, without the process's start, paid once): "
                 "%.0f s CPU-bound, estimate %.0f s (%.1f min)." % (marginal, sizes[0], largest, cpu_bound, estimate, estimate / 60))
    section.text(text)
    section.text("Reading: %d hosts take %.2f× the time of %d with the role and %.2f× with the fleet floor (ideal parallel "
                 "scaling: 1.00×; serial: %d×). The hosts share %d CPUs, and each unpacks the same xz image (importd's tar + xz) "
                 "and boots a machine, so beyond about %d hosts the floor grows with the hosts too: what the role adds is the "
                 "ratio of the two, not the growth. Per host %s s to fetch with %d hosts against %s s with %d."
                 % (largest, median(walls[largest]) / median(walls[sizes[0]]), sizes[0],
                    median(floors[largest]) / median(floors[sizes[0]]), largest // sizes[0], os.cpu_count(),
                    os.cpu_count(), "%.2f" % median(fetches[largest]), largest, "%.2f" % median(fetches[sizes[0]]), sizes[0]))


def fleet_cpu_table(section, sizes, used, walls, floors):
    """Where the role's time over the fleet floor goes on this machine: the CPU seconds of the controller (getrusage of
    the run's processes, as in P7; for the floor, its ssh clients) and of the hosts (their cgroups, benchlib.hosts_cpu),
    role against floor. The lab's hosts and the controller share the machine's CPUs: once the hosts' own work keeps them
    busy, every CPU second the role adds, on the controller or on a host, is wall time (extra / CPUs at the least)."""
    if any(hosts is None for kind in used.values() for size in sizes for _controller, hosts in kind[size]):
        section.text("(No cgroup2 hierarchy holds the lab hosts: the hosts' CPU is not measured.)")
        return
    cpus = os.cpu_count() or 1
    rows = []
    for size in sizes:
        # Medians of each column, (controller, hosts), for role and floor.
        (role_controller, role_hosts), (floor_controller, floor_hosts) = (
            [median(column) for column in zip(*used[kind][size])] for kind in ("role", "floor"))
        extra = role_controller + role_hosts - floor_controller - floor_hosts
        rows.append((size, "%.1f" % role_controller, "%.1f" % role_hosts, "%.1f" % floor_controller, "%.1f" % floor_hosts,
                     "%.1f" % extra, "%.1f" % (extra / cpus), "%.1f" % (median(walls[size]) - median(floors[size])),
                     "%.2f" % ((role_controller + role_hosts) / median(walls[size]) / cpus),
                     "%.2f" % ((floor_controller + floor_hosts) / median(floors[size]) / cpus)))
    section.table(("hosts", "role: controller CPU s", "role: hosts' CPU s", "floor: controller CPU s", "floor: hosts' CPU s",
                   "the role's extra CPU s", "extra / %d CPUs, s" % cpus, "role − floor wall s", "role: CPUs busy",
                   "floor: CPUs busy"), rows,
                  "The CPU of one first converge, all hosts together (median of the runs): the controller's from getrusage "
                  "(ansible-playbook and its children; the floor's ssh clients), the hosts' from their cgroups' cpu.stat "
                  "(everything in them: systemd, importd unpacking the image, the modules, the machine booting). \"CPUs "
                  "busy\" is CPU seconds / wall / %d: near 1 the machine's CPUs were the limit, and the role's extra CPU "
                  "is wall time:" % cpus)


def task_seconds(run, task):
    """Every host's seconds of `task` (all the tasks of that step, step_name) in a run."""
    seconds = {}
    for record in run.records:
        if step_name(strip_role(record["task"])) == task and record["status"] != "skipped":
            seconds[record["host"]] = seconds.get(record["host"], 0.0) + record["seconds"]
    return list(seconds.values())


# -- 4: image distribution ---------------------------------------------------------------------

class ControllerImageServer:
    """The lab's image server program on this machine (127.0.0.1, a free port), its log in a file."""

    def __init__(self, directory, log_path):
        self.directory = directory
        self.log_path = Path(log_path)
        self.port = None
        self.process = None

    def __enter__(self):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        argv = [sys.executable, str(IMAGE_SERVER), "--bind", "127.0.0.1", "--port", str(self.port), "--directory", str(self.directory)]
        with open(self.log_path, "w", encoding="utf-8") as log:
            # Runs until __exit__; the log file stays open in the child.
            self.process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=log)  # pylint: disable=consider-using-with
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return self
            except OSError:
                if time.monotonic() > deadline or self.process.poll() is not None:
                    self.__exit__()
                    raise BenchError("the controller's image server did not start: %s" % self.log_path.read_text(encoding="utf-8")[-2000:]) from None
                time.sleep(0.1)

    def __exit__(self, *exc_info):
        if self.process:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def url(self, name):
        """The URL of file `name`."""
        return "http://127.0.0.1:%d/%s" % (self.port, name)

    def bytes_sent(self):
        """Body bytes sent so far."""
        return sum(int(match.group(1)) for match in SENT.finditer(self.log_path.read_text(encoding="utf-8")))


def host_server_bytes(host):
    """Body bytes the host's own image server sent so far (its journal)."""
    journal = host.run(["journalctl", "-u", "nspawn-nixos-lab-images", "--no-pager", "-o", "cat"]).stdout
    return sum(int(match.group(1)) for match in SENT.finditer(journal))


def mib(count):
    """Bytes as MiB text."""
    return "%.1f MiB" % (count / 1024 / 1024)


def bench_images(args, section):
    """Benchmark 4."""
    runs = args.runs or DEFAULT_RUNS[4]
    name = benchlib.IMAGE_FILE
    results = {"host": [], "controller": []}
    with bench_lab("images", ["12", "13"], count=2) as lab, \
            tempfile.TemporaryDirectory(prefix="bench-images-", dir=benchlib.OUTPUT_DIR) as work, \
            ControllerImageServer(lab.images["directory"], Path(work) / "server.log") as server:
        section.hosts = benchlib.lab_hosts_info(lab)
        hosts = benchlib.interleaved_hosts(lab)
        names = ",".join(host.name for host in hosts)
        size = (Path(lab.images["directory"]) / name).stat().st_size
        sha256 = lab.images["files"][name]["sha256"]
        reset_hosts(hosts, NAME)
        for index in range(runs):
            for mode in (("host", "controller") if index % 2 == 0 else ("controller", "host")):
                extra = {"sidecar_image_checksum": "sha256:" + sha256}
                if mode == "host":
                    extra["sidecar_image_url"] = "{{ lab_image_url }}"
                else:
                    extra.update(sidecar_image_source="controller", sidecar_image_url=server.url(name),
                                 sidecar_image_cache_dir=tempfile.mkdtemp(prefix="cache-", dir=work))
                before = [host_server_bytes(host) for host in hosts], server.bytes_sent()
                run = benchlib.role(lab.inventory, names, extra, forks=len(hosts), what="first converge, image source %s" % mode)
                check_converged(run, [host.name for host in hosts], "first converge, image source %s" % mode)
                hosts_bytes = sum(host_server_bytes(host) for host in hosts) - sum(before[0])
                controller_bytes = server.bytes_sent() - before[1]
                copies = sum(1 for record in run.records if strip_role(record["task"]) == "Copy the image to the host" and record["changed"])
                results[mode].append((run.seconds, hosts_bytes, controller_bytes, copies))
                reset_hosts(hosts, NAME)
                print("  run %d: %s: %.2f s, hosts' servers sent %s, controller's server %s, %d copies over SSH"
                      % (index + 1, mode, run.seconds, mib(hosts_bytes), mib(controller_bytes), copies))
    rows = []
    for mode, label in (("host", "every host downloads (sidecar_image_source: host)"), ("controller", "sidecar_image_source: controller")):
        walls = [item[0] for item in results[mode]]
        hosts_bytes, controller_bytes, copies = (median([item[index] for item in results[mode]]) for index in (1, 2, 3))
        rows.append((label, fmt(walls), mib(hosts_bytes), mib(controller_bytes), "%s (%d × %s)" % (mib(copies * size), copies, mib(size)),
                     mib(hosts_bytes + controller_bytes + copies * size)))
    section.table(("mode, 4 hosts (2×12, 2×13), forks 4", "wall s", "fetched from the hosts' image servers", "fetched from the controller's server",
                   "copied over SSH to the hosts", "total moved"), rows,
                  "First converge of 4 hosts, median (min–max) of %d run(s) per mode, alternating; image %s, %s, sha256 pinned:"
                  % (runs, name, mib(size)))
    host_wall, controller_wall = (median([item[0] for item in results[mode]]) for mode in ("host", "controller"))
    section.text("Reading: with `controller`, the image server sends the image once instead of once per host, but every host still "
                 "receives the whole image, over SSH (`copy`), so the total moved grows by the controller's one download; what the "
                 "mode saves is the image server's (and the hosts' internet) traffic, not bytes on the wire to the hosts. Here "
                 "everything runs on one machine, the network costs nothing, and the controller mode's wall time (%.2f× the per-host "
                 "mode's) shows the cost of its extra steps: the download and sha256 on the controller, the copy through SSH "
                 "(Ansible's `copy` puts the file with sftp over the SSH connection and compares sha1 sums on both sides), the import "
                 "from the staged file and its removal."
                 % (controller_wall / host_wall))


# -- 5: module no-op calls ---------------------------------------------------------------------

def bench_modules(args, section):
    """Benchmark 5 (module_noop.py)."""
    runs = args.runs or DEFAULT_RUNS[5]
    with bench_lab("modules", ["12", "13"]) as lab:
        section.hosts = benchlib.lab_hosts_info(lab)
        rows = module_noop.benchmark(lab.inventory, None, runs)
    section.table(module_noop.HEADER, rows, "Seconds, median / min / max of %d runs per call (after one warm-up call):" % runs)
    section.text("Columns: *ad-hoc wall* is the whole `ansible HOST -m MODULE -a ARGS` process; *task* is the task as Ansible's "
                 "callback times it (SSH round trip with pipelining + module); *module alone* is the module's AnsiballZ payload run "
                 "on the host itself, no Ansible, no SSH. `ping` is the floor; a no-op module call costs its difference to `ping`.")


BENCHMARKS = {
    1: ("First converge: the role against the manual sequence (floor)", bench_converge),
    2: ("No-op re-run of the role against `ansible -m ping`", bench_noop),
    3: ("Fleet scaling: first converge on 1, 2, 4, 8 hosts", bench_fleet),
    4: ("Image distribution: per-host download against sidecar_image_source=controller", bench_images),
    5: ("Module overhead: each module's no-op call against ping", bench_modules),
}


# -- the results file --------------------------------------------------------------------------

def command_line():
    """The command that runs this, as the user typed it (make bench, or python)."""
    arguments = shlex.join(sys.argv[1:])
    if os.environ.get("MAKELEVEL"):
        return "make bench" + (" BENCH_ARGS=%s" % shlex.quote(arguments) if arguments else "")
    return "PYTHONPATH=tests .venv/bin/python benchmarks/run.py" + (" " + arguments if arguments else "")


def write_results(path, sections, command):
    """Replace the sections that ran in `path`, keep the others."""
    path = Path(path)
    kept = {}
    if path.exists():
        for match in re.finditer(r"<!-- bench (\d+) start -->.*?<!-- bench \1 end -->", path.read_text(encoding="utf-8"), re.S):
            kept[int(match.group(1))] = match.group(0)
    machine = benchlib.machine_info()
    for section in sections:
        kept[section.number] = section.render(command, machine)
    path.write_text(encoding="utf-8", data=RESULTS_HEADER + "\n" + "\n\n".join(kept[number] for number in sorted(kept)) + "\n")


def parse_args():
    """The command line."""
    def numbers(text):
        return [int(item) for item in text.split(",") if item.strip()]
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", maxsplit=1)[0])
    parser.add_argument("--only", type=numbers, default=sorted(BENCHMARKS), help="benchmarks to run, e.g. 1,2 (default: all)")
    parser.add_argument("--runs", type=int, help="runs per benchmark (default: 5 for 1 and 2, 2 for 3 and 4, 10 for 5)")
    parser.add_argument("--fleet", type=numbers, default=[1, 2, 4, 8], help="fleet sizes of benchmark 3 (default 1,2,4,8)")
    parser.add_argument("--output", default=str(benchlib.BENCH_DIR / "RESULTS.md"), help="results file (default benchmarks/RESULTS.md)")
    args = parser.parse_args()
    unknown = [number for number in args.only if number not in BENCHMARKS]
    if unknown:
        parser.error("--only: no benchmark %s (there are 1-%d)" % (unknown, len(BENCHMARKS)))
    args.fleet = sorted(set(args.fleet))
    return args


def main():
    """Run the chosen benchmarks, write the results file, exit 1 if one broke."""
    args = parse_args()
    signal.signal(signal.SIGTERM, lambda *dummy: sys.exit(143))   # runs the `finally`s that down the labs
    started = time.monotonic()
    command = command_line()
    sections, failed = [], []
    try:
        for number in args.only:
            title, function = BENCHMARKS[number]
            print("\n=== %d. %s (load average %s)" % (number, title, benchlib.load_average()))
            section = Section(number, title, load_before=benchlib.load_average(),
                              started=datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"))
            section_started = time.monotonic()
            try:
                function(args, section)
            except BenchError as error:
                section.error = str(error)
            except Exception:  # pylint: disable=broad-except
                # A bug of the benchmark or the lab: report it, run the other benchmarks.
                section.error = traceback.format_exc()
            section.seconds = time.monotonic() - section_started
            section.load_after = benchlib.load_average()
            if section.error:
                failed.append(number)
                print("\nbenchmark %d FAILED: %s" % (number, section.error))
            sections.append(section)
    finally:
        if sections:
            write_results(args.output, sections, command)
            print("\nwrote %s (benchmarks %s)" % (args.output, ", ".join(str(section.number) for section in sections)))
    print("make bench: %.0f s; %s" % (time.monotonic() - started, "failed: benchmark %s" % ", ".join(map(str, failed)) if failed else "all ran"))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
