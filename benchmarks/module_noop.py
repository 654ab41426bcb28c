"""Benchmark: how long a no-op call of each module of the collection takes over real SSH.

    PYTHONPATH=tests .venv/bin/python benchmarks/module_noop.py                 # boots a lab (Debian 12 + 13)
    PYTHONPATH=tests .venv/bin/python benchmarks/module_noop.py --releases 13
    PYTHONPATH=tests .venv/bin/python benchmarks/module_noop.py --inventory /var/lib/nspawn-nixos-lab/dev/inventory.ini

On every lab host (one per Debian release) it prepares an image (`bench`, the fixture
.tar.gz with its sha256 pinned), a running machine from it, its settings file and a NixOS
module inside it (applied, nixos-rebuild done), then runs each module's no-op call --runs
times as an ad-hoc command (`ansible HOST -m ...`, a new ansible process each time, as a
user would) and prints median/min/max of three figures:

    ad-hoc wall   the whole `ansible` command (Python start, inventory, SSH, module)
    task          the task as Ansible timed it (callback: runner start -> result), i.e. SSH
                  round trip + module; SSH multiplexing (ControlPersist) is on, as by default
    module alone  the module's AnsiballZ payload run on the host itself (no Ansible, no SSH)

`ansible -m ping` is the floor. Every call must report changed=false (checked, shown as
"no-op"); slowness never fails the benchmark. The machine and image are removed at the end
(and the lab downed, when this script booted it). Needs root, like the lab. run.py
(`make bench`, benchmark 5) runs the same through benchmark().
"""

import argparse
import json
import os
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# benchmarks/ is sys.path[0]; benchlib puts tests/ (the lab and its Ansible runner) on sys.path.
from benchlib import AnsibleRunner, BenchError, bench_lab, load_average, print_table, read_timing, summary, timing_env

NAME = "bench"
REMOTE_TMP = "/root/.ansible/nspawn-nixos-bench"
HEADER = ("Debian", "host", "call", "runs", "no-op", "ad-hoc wall s", "task s", "module alone s")
# The settings file and NixOS module the no-op calls find in place.
NSPAWN_SETTINGS = {"Network": {"VirtualEthernet": False}, "Exec": {"Environment": ["NSPAWN_NIXOS_BENCH=1"]}}
NIXOS_SETTINGS = {"time": {"timeZone": "UTC"}, "environment": {"variables": {"NSPAWN_NIXOS_BENCH": "1"}}}

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
    """Ad-hoc `ansible` commands against one inventory, timed by the lab_json callback."""

    def __init__(self, inventory, work_dir):
        self.work_dir = Path(work_dir)
        self.timing_path = self.work_dir / "timing.json"
        self.runner = AnsibleRunner(inventory)
        self.env = self.runner.env()
        self.env.update(timing_env(self.timing_path))
        self.env["ANSIBLE_LOAD_CALLBACK_PLUGINS"] = "1"   # ad-hoc commands load no other callbacks without it
        self.ansible = str(self.runner.bin_dir / "ansible")

    def adhoc(self, host, module, args="", env=None, check=True):
        """Run `ansible HOST -m MODULE -a ARGS` (ARGS: key=value text, or a dict sent as JSON);
        return (wall seconds, the host's callback record, process)."""
        if self.timing_path.exists():
            self.timing_path.unlink()
        if isinstance(args, dict):
            args = json.dumps(args)
        argv = [self.ansible, host, "-m", module] + (["-a", args] if args else [])
        started = time.monotonic()
        process = subprocess.run(argv, capture_output=True, text=True, env=dict(self.env, **(env or {})), cwd=self.work_dir,
                                 check=False)
        wall = time.monotonic() - started
        records = [record for record in read_timing(self.timing_path) if record["host"] == host]
        record = records[-1] if records else {}
        if check and (process.returncode != 0 or record.get("status") != "ok"):
            raise BenchError("`%s` failed (rc=%d):\n%s\n%s"
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


def calls(hostvars):
    """(label, module, args) of the floor and of every module's no-op call, in the order timed."""
    return [
        ("ping (floor)", "ansible.builtin.ping", ""),
        ("nspawn_image present", "nspawn.nixos.nspawn_image",
         {"name": NAME, "url": hostvars["lab_image_gz_url"], "checksum": "sha256:" + hostvars["lab_image_gz_sha256"]}),
        ("nspawn_machine running", "nspawn.nixos.nspawn_machine", {"name": NAME, "state": "running"}),
        ("nspawn_settings present", "nspawn.nixos.nspawn_settings", {"name": NAME, "settings": NSPAWN_SETTINGS}),
        ("nixos_config present", "nspawn.nixos.nixos_config", {"name": NAME, "settings": NIXOS_SETTINGS}),
        ("nspawn_info", "nspawn.nixos.nspawn_info", {"name": [NAME]}),
    ]


def prepare(bench, host, hostvars):
    """Put in place what the no-op calls find: image, running machine, settings file, NixOS module (rebuilt)."""
    for dummy, module, args in calls(hostvars)[1:-1]:   # neither ping nor nspawn_info change anything
        bench.adhoc(host, module, args)


def measure(bench, host, hostvars, runs):
    """Table rows (see HEADER) of every call on one host."""
    rows = []
    for label, module, args in calls(hostvars):
        walls, tasks, noop = [], [], 0
        bench.adhoc(host, module, args)  # warm-up: SSH master connection, page cache
        for dummy in range(runs):
            wall, record, dummy = bench.adhoc(host, module, args)
            walls.append(wall)
            tasks.append(record["seconds"])
            noop += not record["changed"]
        if noop != runs:
            raise BenchError("%s: %s changed something in %d of %d runs that should be no-ops" % (host, label, runs - noop, runs))
        alone = module_alone(bench, host, module, args, runs)
        rows.append((hostvars.get("lab_release", "?"), host, label, runs, "%d/%d" % (noop, runs), summary(walls), summary(tasks),
                     summary(alone) if alone else "-"))
        print("  %s %-24s ad-hoc %s  task %s  alone %s" % (host, label, rows[-1][5], rows[-1][6], rows[-1][7]))
        sys.stdout.flush()
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


def benchmark(inventory, releases=None, runs=10):
    """Prepare, time and clean up on every host of `inventory` (of `releases`, if given); return table rows."""
    rows = []
    with tempfile.TemporaryDirectory(prefix="nspawn-nixos-bench-") as work_dir:
        bench = Bench(inventory, work_dir)
        hosts = [(host, hostvars) for host, hostvars in bench.hosts()
                 if not releases or str(hostvars.get("lab_release")) in releases]
        if not hosts:
            raise BenchError("no lab host%s in %s" % (" of Debian " + ", ".join(releases) if releases else "", inventory))
        try:
            for host, hostvars in hosts:
                print("%s: preparing image, machine, settings and NixOS module %r..." % (host, NAME))
                prepare(bench, host, hostvars)
                print("%s: timing %d runs of each call..." % (host, runs))
                rows += measure(bench, host, hostvars, runs)
        finally:
            for host, dummy in hosts:
                bench.adhoc(host, "nspawn.nixos.nspawn_machine", {"name": NAME, "state": "absent", "remove_image": True}, check=False)
    return rows


def main():
    """Command line: boot a lab (or use --inventory), run benchmark(), print the table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", maxsplit=1)[0])
    parser.add_argument("--inventory", help="reuse a running lab (its inventory.ini) instead of booting one")
    parser.add_argument("--releases", nargs="+", help="Debian releases to boot (default: 12 13), or to pick from --inventory")
    parser.add_argument("--runs", type=int, default=10, help="timed runs per call (default 10)")
    args = parser.parse_args()

    load_before = load_average()
    try:
        if args.inventory:
            rows = benchmark(Path(args.inventory), args.releases, args.runs)
        else:
            with bench_lab("modules-%d" % os.getpid(), args.releases or ["12", "13"]) as lab:
                rows = benchmark(lab.inventory, None, args.runs)
    except BenchError as error:
        print("FAILED: %s" % error)
        return 1
    print_table(HEADER, rows, "seconds as median / min / max")
    print("load average (1/5/15 min) of this machine: %s before, %s after; %d CPUs" % (load_before, load_average(), os.cpu_count()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
