"""Benchmark T: a large file through the nspawn.nixos.machine connection, against sftp to the host.

    PYTHONPATH=tests .venv/bin/python benchmarks/transfer.py              # 1024 MiB, 3 runs, Debian 13
    PYTHONPATH=tests .venv/bin/python benchmarks/transfer.py --mib 256 --runs 1 --release 12

One lab host with one sidecar (the FIXTURE image, python3 in its NixOS settings). Per run, a file of random bytes goes
in (ansible.builtin.copy to the sidecar) and out (ansible.builtin.fetch) over the connection plugin, and the same
file goes in and out of the host with sftp (put, get; OpenSSH's own client and server over the same SSH). Printed:
seconds of each leg, the whole ansible-playbook's controller peak RSS (getrusage of its descendants, MiB), and the
ratio of the connection's round trip to sftp's. A copy that arrives changed fails the run; slowness fails nothing.
Four legs per run, the same file each: copy + fetch over the connection (the sidecar), the same tasks over Ansible's
own ssh connection to the host (sftp underneath: what a user waits for without a sidecar), the connection's bare
transport (ssh, systemd-run --pipe, cat), and sftp alone. Ansible's copy and fetch add checksums on both sides and a
module run each, which neither bare leg has: compare the connection with ssh, and the stream with sftp.
"""

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import benchlib  # puts tests/ on sys.path
from benchlib import BenchError, bench_lab, median
from lab.files import random_file, sha256_file

NAME = "xfer"
RESULTS = Path(__file__).resolve().parent / "RESULTS-transfer.md"
RESULTS_TEXT = """# Benchmark T: a large file through the connection

Written by `benchmarks/transfer.py` (what it measures: its docstring). %(mib)d MiB of random bytes in and out,
one Debian %(release)s lab host, %(runs)d run(s), medians of the round trip (in + out) in seconds.

Command: `%(command)s`
Machine: %(machine)s; load at the end %(load)s (other work ran on the machine: compare legs of the same run).

| leg | round trip s | what |
| --- | --- | --- |
%(summary)s

%(ratios)s. The copy arrived and came back byte for byte in every leg (sha256).

| run | in + out |
| --- | --- |
%(every)s
"""
SETTINGS = {"environment": {"systemPackages": {"__nix_raw__": "with pkgs; [ python3 ]"}}}


def provision(state="present"):
    return [{"name": "sidecar", "hosts": "sidecar_hosts", "gather_facts": False, "roles": [{"role": "nspawn.nixos.sidecar", "vars": {
        "sidecar_name": NAME, "sidecar_state": state, "sidecar_image_url": "{{ lab_image_url }}",
        "sidecar_image_checksum": "{{ lab_image_sha256 }}", "sidecar_nixos_settings": SETTINGS}}]}]


def transfer_tasks(source, back):
    return [
        {"name": "in", "ansible.builtin.copy": {"src": str(source), "dest": "/root/big.bin", "mode": "0600"}},
        {"name": "out", "ansible.builtin.fetch": {"src": "/root/big.bin", "dest": str(back), "flat": True}},
        {"name": "remove", "ansible.builtin.file": {"path": "/root/big.bin", "state": "absent"}},
    ]


def playbook_run(runner, plays, limit, target):
    """Run plays with the controller's peak RSS measured; ({task: seconds} on target, peak MiB)."""
    result = runner.playbook(plays, limit=limit, timeout=3600, peak_rss=True)
    if result.rc != 0:
        raise BenchError("the transfer playbook failed:\n%s" % result)
    return {task["task"]: task["seconds"] for task in result.tasks if task["host"] == target}, result.peak_rss_mib


def connection_run(runner, host, source, back):
    """copy in and fetch out over nspawn.nixos.machine to the sidecar; (seconds in, seconds out, peak RSS MiB)."""
    sidecar = "%s-%s" % (host.name, NAME)
    plays = provision() + [{"name": "transfer", "hosts": "sidecar_%s" % NAME, "gather_facts": False,
                            "tasks": transfer_tasks(source, back)}]
    seconds, peak = playbook_run(runner, plays, host.name + "," + sidecar, sidecar)
    return seconds["in"], seconds["out"], peak


def ssh_run(runner, host, source, back):
    """The same tasks over ansible.builtin.ssh (sftp underneath) to the host itself: what Ansible's own connection
    costs for the file; (seconds in, seconds out, peak RSS MiB)."""
    plays = [{"name": "transfer", "hosts": host.name, "gather_facts": False, "tasks": transfer_tasks(source, back)}]
    seconds, peak = playbook_run(runner, plays, host.name, host.name)
    return seconds["in"], seconds["out"], peak


def timed(argv, **kwargs):
    started = time.monotonic()
    done = subprocess.run(argv, capture_output=True, timeout=3600, check=False, **kwargs)
    if done.returncode != 0:
        raise BenchError("%s failed: %s" % (argv[-1], done.stderr[-2000:]))
    return time.monotonic() - started


def sftp_run(host, source, back):
    """sftp put and get of the same file to and from the host; (seconds in, seconds out)."""
    figures = [timed(["sftp", "-q", *host.ssh_args, "-b", "-", "root@" + host.name], input=("%s\n" % command).encode())
               for command in ("put %s /root/big.bin" % source, "get /root/big.bin %s" % back)]
    host.run(["rm", "-f", "/root/big.bin"])
    return tuple(figures)


def stream_run(host, source, back):
    """The connection's own transport without Ansible: ssh to the host, systemd-run --pipe, cat in the machine (the
    command put_file and fetch_file run, without the exit-status wrapper); (seconds in, seconds out)."""
    inside = "systemd-run -M %s --wait --pipe --collect -q /bin/sh -c " % NAME
    ssh = ["ssh", *host.ssh_args, "-o", "BatchMode=yes", "root@" + host.name]
    with open(source, "rb") as stdin:
        seconds_in = timed(ssh + [inside + "'cat > /root/big.bin'"], stdin=stdin)
    with open(back, "wb") as stdout:
        started = time.monotonic()
        subprocess.run(ssh + [inside + "'cat /root/big.bin'"], stdout=stdout, timeout=3600, check=True)
        seconds_out = time.monotonic() - started
    host.run(["machinectl", "shell", NAME, "/run/current-system/sw/bin/rm", "-f", "/root/big.bin"])
    return seconds_in, seconds_out


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n", maxsplit=1)[0])
    parser.add_argument("--mib", type=int, default=1024)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--release", default="13")
    args = parser.parse_args()
    benchlib.OUTPUT_DIR.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="xfer-data-", dir=str(benchlib.OUTPUT_DIR)))
    source, back = work / "big.bin", work / "back.bin"
    print("writing %d MiB of random bytes..." % args.mib)
    digest = random_file(source, args.mib)
    rows = []
    try:
        with bench_lab("transfer", [args.release]) as lab:
            host = lab.hosts[0]
            runner = benchlib.AnsibleRunner(lab.inventory, env={"ANSIBLE_DEPRECATION_WARNINGS": "False"})
            result = runner.playbook(provision())
            if result.rc != 0:
                raise BenchError("provisioning failed:\n%s" % result)
            for run in range(args.runs):
                legs = {}
                for leg, function in (("connection", connection_run), ("ssh", ssh_run), ("sftp", sftp_run),
                                      ("stream", stream_run)):
                    figures = function(runner, host, source, back) if leg in ("connection", "ssh") else function(host, source, back)
                    if sha256_file(back) != digest:
                        raise BenchError("the file that came back through %s differs from the one sent" % leg)
                    back.unlink()
                    legs[leg] = figures
                rows.append(legs)
                print("run %d: %s" % (run + 1, "; ".join(
                    "%s in %.1f s, out %.1f s%s" % (leg, f[0], f[1], ", peak RSS %d MiB" % f[2] if len(f) > 2 else "")
                    for leg, f in legs.items())))
    finally:
        subprocess.run(["rm", "-rf", str(work)], check=False)

    def total(leg):
        return median([row[leg][0] + row[leg][1] for row in rows])

    summary = []

    print("\nBenchmark T, %d MiB in and out, Debian %s, %d run(s), medians of the round trip:" % (args.mib, args.release, len(rows)))
    for leg, what in (("connection", "copy + fetch over nspawn.nixos.machine (sidecar)"),
                      ("ssh", "copy + fetch over ansible.builtin.ssh (host, sftp)"),
                      ("stream", "ssh + systemd-run --pipe + cat (the connection's transport)"),
                      ("sftp", "sftp put + get (host)")):
        peak = ", controller peak RSS %d MiB" % median([row[leg][2] for row in rows]) if leg in ("connection", "ssh") else ""
        print("  %-11s %6.1f s  %s%s" % (leg, total(leg), what, peak))
        summary.append("| %s | %.1f | %s%s |" % (leg, total(leg), what, peak))
    ratios = "connection / ssh %.2fx; stream / sftp %.2fx" % (total("connection") / total("ssh"), total("stream") / total("sftp"))
    print("  " + ratios)
    command = "PYTHONPATH=tests .venv/bin/python benchmarks/transfer.py " + " ".join(sys.argv[1:])
    machine = "; ".join("%s: %s" % pair for pair in benchlib.machine_info())
    every = ["| %d | %s |" % (number + 1, "; ".join("%s %.1f + %.1f s" % (leg, f[0], f[1]) for leg, f in row.items()))
             for number, row in enumerate(rows)]
    RESULTS.write_text(RESULTS_TEXT % dict(
        mib=args.mib, release=args.release, runs=len(rows), command=command, machine=machine,
        load="%.2f" % os.getloadavg()[0], summary="\n".join(summary), ratios=ratios, every="\n".join(every)))
    print("written: %s" % RESULTS)
    print("machine: %d CPUs, load %.2f; maxrss of this script %d MiB" % (
        os.cpu_count(), os.getloadavg()[0], resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024))


if __name__ == "__main__":
    try:
        main()
    except BenchError as exc:
        print("FAILED: %s" % exc)
        sys.exit(1)
