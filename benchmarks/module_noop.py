"""Benchmark: how long a no-op nspawn_image / nspawn_machine call takes over real SSH.

    PYTHONPATH=tests .venv/bin/python benchmarks/module_noop.py                 # boots a lab (Debian 12 + 13)
    PYTHONPATH=tests .venv/bin/python benchmarks/module_noop.py --releases 13
    PYTHONPATH=tests .venv/bin/python benchmarks/module_noop.py --inventory /var/lib/nspawn-nixos-lab/dev/inventory.ini

On every lab host (one per Debian release) it prepares an image (`bench`, the fixture
.tar.gz with its sha256 pinned) and a running machine from it, then runs each call
--runs times as an ad-hoc command (`ansible HOST -m ...`, a new ansible process each time,
as a user would) and prints median/min/max of three figures:

    ad-hoc wall   the whole `ansible` command (Python start, inventory, SSH, module)
    task          the task as Ansible timed it (callback: runner start -> result), i.e. SSH
                  round trip + module; SSH multiplexing (ControlPersist) is on, as by default
    module alone  the module's AnsiballZ payload run on the host itself (no Ansible, no SSH)

`ansible -m ping` is the floor. Every call must report changed=false (checked, shown as
"no-op"); slowness never fails the benchmark. The image and machine are removed at the end
(and the lab downed, when this script booted it). Needs root, like the lab.
"""

import argparse
import json
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CHECKOUT = Path(__file__).resolve().parents[1]
for _path in (CHECKOUT / "tests", CHECKOUT / "tests" / "integration"):
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

from runner import AnsibleRunner  # noqa: E402  (tests/integration/runner.py: the same environment as the tests)

NAME = "bench"
REMOTE_TMP = "/root/.ansible/nspawn-nixos-bench"

# Records, per ad-hoc run, each host's task duration and changed flag into a JSON file.
TIMING_CALLBACK = '''
import json, os, time
from ansible.plugins.callback import CallbackBase

class CallbackModule(CallbackBase):
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = "aggregate"
    CALLBACK_NAME = "bench_timing"
    CALLBACK_NEEDS_ENABLED = False

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.started, self.records = {}, {}

    def v2_runner_on_start(self, host, task):
        self.started[host.get_name()] = time.monotonic()

    def _done(self, result, status):
        host = result._host.get_name()
        self.records[host] = {"seconds": time.monotonic() - self.started.get(host, time.monotonic()), "status": status,
                              "changed": bool(result._result.get("changed")), "msg": result._result.get("msg", "")}

    def v2_runner_on_ok(self, result):
        self._done(result, "ok")

    def v2_runner_on_failed(self, result, ignore_errors=False):
        self._done(result, "failed")

    def v2_runner_on_unreachable(self, result):
        self._done(result, "unreachable")

    def v2_playbook_on_stats(self, stats):  # the ansible ad-hoc command sends it too
        with open(os.environ["NSPAWN_BENCH_TIMING"], "w") as handle:
            json.dump(self.records, handle)
'''

# Runs an AnsiballZ payload `runs` times on the host and prints the durations (JSON).
TIME_PAYLOAD = ("import json, subprocess, sys, time\n"
                "durations = []\n"
                "for _ in range(int(sys.argv[2])):\n"
                "    started = time.monotonic()\n"
                "    done = subprocess.run([sys.executable, sys.argv[1]], capture_output=True, text=True)\n"
                "    durations.append(time.monotonic() - started)\n"
                "    if done.returncode != 0 or json.loads(done.stdout).get('changed'):\n"
                "        print(json.dumps({'error': done.stdout[-2000:] + done.stderr[-2000:]})); sys.exit(1)\n"
                "print(json.dumps(durations))\n")


class Bench:
    def __init__(self, inventory, work_dir):
        self.work_dir = Path(work_dir)
        (self.work_dir / "callbacks").mkdir()
        (self.work_dir / "callbacks" / "bench_timing.py").write_text(TIMING_CALLBACK)
        self.timing_path = self.work_dir / "timing.json"
        self.runner = AnsibleRunner(inventory)
        self.env = self.runner.env()
        self.env.update({
            "ANSIBLE_CALLBACK_PLUGINS": str(self.work_dir / "callbacks"),
            "ANSIBLE_LOAD_CALLBACK_PLUGINS": "1",   # ad-hoc commands load no other callbacks without it
            "NSPAWN_BENCH_TIMING": str(self.timing_path),
            "ANSIBLE_DEPRECATION_WARNINGS": "False",
        })
        self.ansible = str(self.runner.bin_dir / "ansible")

    def adhoc(self, host, module, args="", env=None, check=True):
        """Run `ansible HOST -m MODULE -a ARGS`; return (wall seconds, callback record, process)."""
        if self.timing_path.exists():
            self.timing_path.unlink()
        argv = [self.ansible, host, "-m", module] + (["-a", args] if args else [])
        started = time.monotonic()
        process = subprocess.run(argv, capture_output=True, text=True, env=dict(self.env, **(env or {})), cwd=self.work_dir,
                                 check=False)
        wall = time.monotonic() - started
        record = json.loads(self.timing_path.read_text()).get(host, {}) if self.timing_path.exists() else {}
        if check and (process.returncode != 0 or record.get("status") != "ok"):
            raise RuntimeError("`%s` failed (rc=%d):\n%s\n%s"
                               % (shlex.join(argv[1:]), process.returncode, process.stdout[-3000:], process.stderr[-3000:]))
        return wall, record, process

    def hosts(self):
        """[(host, hostvars)] of the group sidecar_hosts, sorted by release."""
        process = subprocess.run([str(self.runner.bin_dir / "ansible-inventory"), "--list"], capture_output=True, text=True,
                                 env=self.env, check=True, cwd=self.work_dir)
        data = json.loads(process.stdout)
        hostvars = data.get("_meta", {}).get("hostvars", {})
        names = set()
        for group in ["sidecar_hosts"] + data.get("sidecar_hosts", {}).get("children", []):
            names.update(data.get(group, {}).get("hosts", []))
        return sorted(((name, hostvars.get(name, {})) for name in names), key=lambda item: (str(item[1].get("lab_release")), item[0]))


def summary(values):
    if not values:
        return "-"
    return "%.2f / %.2f / %.2f" % (statistics.median(values), min(values), max(values))


def measure(bench, host, hostvars, runs):
    calls = [
        ("ping (floor)", "ansible.builtin.ping", ""),
        ("nspawn_image present", "nspawn.nixos.nspawn_image",
         "name=%s url=%s checksum=sha256:%s" % (NAME, hostvars["lab_image_gz_url"], hostvars["lab_image_gz_sha256"])),
        ("nspawn_machine running", "nspawn.nixos.nspawn_machine", "name=%s state=running" % NAME),
    ]
    rows = []
    for label, module, args in calls:
        walls, tasks, noop = [], [], 0
        bench.adhoc(host, module, args)  # warm-up: SSH master connection, page cache
        for dummy in range(runs):
            wall, record, dummy = bench.adhoc(host, module, args)
            walls.append(wall)
            tasks.append(record["seconds"])
            noop += not record["changed"]
        alone = module_alone(bench, host, module, args, runs)
        rows.append((hostvars.get("lab_release", "?"), host, label, runs, "%d/%d" % (noop, runs), summary(walls), summary(tasks),
                     summary(alone) if alone else "-"))
    return rows


def module_alone(bench, host, module, args, runs):
    """Durations of the module's AnsiballZ payload run directly on the host, `runs` times."""
    keep = {"ANSIBLE_KEEP_REMOTE_FILES": "1", "ANSIBLE_PIPELINING": "False", "ANSIBLE_REMOTE_TMP": REMOTE_TMP}
    bench.adhoc(host, "ansible.builtin.raw", "rm -rf %s" % REMOTE_TMP)
    bench.adhoc(host, module, args, env=keep)
    payload = "AnsiballZ_%s.py" % module.rsplit(".", 1)[-1]
    dummy, dummy, found = bench.adhoc(host, "ansible.builtin.raw", "find %s -name %s" % (REMOTE_TMP, payload))
    paths = [line.strip() for line in found.stdout.splitlines() if line.strip().endswith(payload)]
    if not paths:
        print("  (module alone: no %s kept on %s)" % (payload, host))
        return []
    script = "python3 -c %s %s %d" % (shlex.quote(TIME_PAYLOAD), shlex.quote(paths[0]), runs)
    dummy, dummy, timed = bench.adhoc(host, "ansible.builtin.raw", script, check=False)
    bench.adhoc(host, "ansible.builtin.raw", "rm -rf %s" % REMOTE_TMP)
    for line in timed.stdout.splitlines():
        if line.strip().startswith("["):
            return json.loads(line)
    print("  (module alone on %s failed: %s)" % (host, timed.stdout[-1000:]))
    return []


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", maxsplit=1)[0])
    parser.add_argument("--inventory", help="reuse a running lab (its inventory.ini) instead of booting one")
    parser.add_argument("--releases", nargs="+", help="Debian releases to boot (default: 12 13), or to pick from --inventory")
    parser.add_argument("--runs", type=int, default=10, help="timed runs per call (default 10)")
    args = parser.parse_args()

    lab = None
    if args.inventory:
        inventory = Path(args.inventory)
    else:
        from lab import Lab  # noqa: E402  (tests/ on sys.path)
        lab = Lab("bench-%d" % os.getpid())
        releases = args.releases or ["12", "13"]
        print("booting lab %s (Debian %s)..." % (lab.name, ", ".join(releases)))
        lab.up(releases=releases)
        inventory = lab.inventory
    rows = []
    load_before = os.getloadavg()
    try:
        with tempfile.TemporaryDirectory(prefix="nspawn-nixos-bench-") as work_dir:
            bench = Bench(inventory, work_dir)
            hosts = [(host, hostvars) for host, hostvars in bench.hosts()
                     if not args.releases or str(hostvars.get("lab_release")) in args.releases]
            if not hosts:
                print("no lab host%s in %s" % (" of Debian " + ", ".join(args.releases) if args.releases else "", inventory))
                return 1
            try:
                for host, hostvars in hosts:
                    print("%s: preparing image and machine %r..." % (host, NAME))
                    bench.adhoc(host, "nspawn.nixos.nspawn_image", "name=%s url=%s checksum=sha256:%s" % (
                        NAME, hostvars["lab_image_gz_url"], hostvars["lab_image_gz_sha256"]))
                    bench.adhoc(host, "nspawn.nixos.nspawn_machine", "name=%s state=running" % NAME)
                    print("%s: timing %d runs of each call..." % (host, args.runs))
                    rows += measure(bench, host, hostvars, args.runs)
            finally:
                for host, dummy in hosts:
                    bench.adhoc(host, "nspawn.nixos.nspawn_machine", "name=%s state=absent remove_image=true" % NAME, check=False)
    finally:
        if lab is not None:
            lab.down()
    print_table(rows)
    print("load average (1/5/15 min) of this machine: %s before, %s after; %d CPUs"
          % ("/".join("%.1f" % value for value in load_before), "/".join("%.1f" % value for value in os.getloadavg()), os.cpu_count()))
    return 0


def print_table(rows):
    header = ("Debian", "host", "call", "runs", "no-op", "ad-hoc wall s", "task s", "module alone s")
    widths = [max(len(str(row[index])) for row in rows + [header]) for index in range(len(header))]
    print("\nseconds as median / min / max")
    for row in [header] + rows:
        print("  ".join(str(cell).ljust(width) for cell, width in zip(row, widths)).rstrip())


if __name__ == "__main__":
    sys.exit(main())
