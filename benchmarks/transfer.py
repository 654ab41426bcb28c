"""Benchmark T: a large file through the nspawn.nixos.machine connection, against sftp to the host.

    PYTHONPATH=tests .venv/bin/python benchmarks/transfer.py              # 1024 MiB, 3 runs, Debian 13
    PYTHONPATH=tests .venv/bin/python benchmarks/transfer.py --mib 256 --runs 1 --release 12

One lab host with one sidecar (the FIXTURE image, python3 in its NixOS settings). Per run, a file of random bytes goes
in (ansible.builtin.copy to the sidecar) and out (ansible.builtin.fetch) over the connection plugin, and the same
file goes in and out of the host with sftp (put, get; OpenSSH's own client and server over the same SSH). Printed:
seconds of each leg, the whole ansible-playbook's controller peak RSS (getrusage of its descendants, MiB), and the
ratio of the connection's round trip to sftp's. A copy that arrives changed fails the run; slowness fails nothing.
The task runs include Ansible's own work around a transfer (copy's checksum on both sides, fetch's checksum), which
sftp does not do: the ratio is that of what a user waits for.
"""

import argparse
import hashlib
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import benchlib  # puts tests/ on sys.path
from benchlib import BenchError, bench_lab, median

NAME = "xfer"
SETTINGS = {"environment": {"systemPackages": {"__nix_raw__": "with pkgs; [ python3 ]"}}}


def provision(state="present"):
    return [{"name": "sidecar", "hosts": "sidecar_hosts", "gather_facts": False, "roles": [{"role": "nspawn.nixos.sidecar", "vars": {
        "sidecar_name": NAME, "sidecar_state": state, "sidecar_image_url": "{{ lab_image_url }}",
        "sidecar_image_checksum": "{{ lab_image_sha256 }}", "sidecar_nixos_settings": SETTINGS}}]}]


def random_file(path, mib):
    digest = hashlib.sha256()
    with open(path, "wb") as handle:
        for dummy in range(mib):
            block = os.urandom(1 << 20)
            digest.update(block)
            handle.write(block)
    return digest.hexdigest()


def sha256(path):
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def connection_run(runner, host, source, back):
    """copy in and fetch out over the connection; (seconds in, seconds out, controller peak RSS MiB)."""
    sidecar = "%s-%s" % (host.name, NAME)
    plays = provision() + [{"name": "transfer", "hosts": "sidecar_%s" % NAME, "gather_facts": False, "tasks": [
        {"name": "in", "ansible.builtin.copy": {"src": str(source), "dest": "/root/big.bin", "mode": "0600"}},
        {"name": "out", "ansible.builtin.fetch": {"src": "/root/big.bin", "dest": str(back), "flat": True}},
        {"name": "remove", "ansible.builtin.file": {"path": "/root/big.bin", "state": "absent"}},
    ]}]
    work = Path(tempfile.mkdtemp(prefix="xfer-", dir=str(benchlib.OUTPUT_DIR)))
    playbook = work / "playbook.json"
    playbook.write_text(json.dumps(plays))
    json_path = work / "results.json"
    script = ("import resource, subprocess, sys; done = subprocess.run(sys.argv[1:]); "
              "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss); sys.exit(done.returncode)")
    argv = [sys.executable, "-c", script, str(runner.bin_dir / "ansible-playbook"), str(playbook), "--limit", host.name + "," + sidecar]
    done = subprocess.run(argv, capture_output=True, text=True, env=runner.env(json_path), cwd=str(work), timeout=3600, check=False)
    if done.returncode != 0:
        raise BenchError("the transfer playbook failed:\n%s%s" % (done.stdout[-4000:], done.stderr[-2000:]))
    tasks = json.loads(json_path.read_text())["tasks"]
    seconds = {task["task"]: task["seconds"] for task in tasks if task["host"] == sidecar}
    peak = int(done.stdout.strip().splitlines()[-1]) // 1024
    subprocess.run(["rm", "-rf", str(work)], check=False)
    return seconds["in"], seconds["out"], peak


def sftp_run(host, source, back):
    """sftp put and get of the same file to and from the host; (seconds in, seconds out)."""
    figures = []
    for command in ("put %s /root/big.bin" % source, "get /root/big.bin %s" % back):
        started = time.monotonic()
        done = subprocess.run(["sftp", "-q", *host.ssh_args, "-b", "-", "root@" + host.name], input=command + "\n",
                              capture_output=True, text=True, timeout=3600, check=False)
        figures.append(time.monotonic() - started)
        if done.returncode != 0:
            raise BenchError("sftp %s failed: %s" % (command, done.stderr[-2000:]))
    host.run(["rm", "-f", "/root/big.bin"])
    return tuple(figures)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n", maxsplit=1)[0])
    parser.add_argument("--mib", type=int, default=1024)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--release", default="13")
    args = parser.parse_args()
    benchlib.OUTPUT_DIR.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="xfer-data-", dir=str(benchlib.OUTPUT_DIR)))
    source, back, sftp_back = work / "big.bin", work / "back.bin", work / "sftp-back.bin"
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
                conn_in, conn_out, peak = connection_run(runner, host, source, back)
                if sha256(back) != digest:
                    raise BenchError("the file fetched over the connection differs from the one copied in")
                back.unlink()
                sftp_in, sftp_out = sftp_run(host, source, sftp_back)
                if sha256(sftp_back) != digest:
                    raise BenchError("the file fetched with sftp differs")
                sftp_back.unlink()
                rows.append((conn_in, conn_out, peak, sftp_in, sftp_out))
                print("run %d: connection in %.1f s, out %.1f s, controller peak RSS %d MiB; sftp put %.1f s, get %.1f s"
                      % (run + 1, conn_in, conn_out, peak, sftp_in, sftp_out))
    finally:
        subprocess.run(["rm", "-rf", str(work)], check=False)
    conn = median([row[0] + row[1] for row in rows])
    sftp = median([row[3] + row[4] for row in rows])
    print("\nBenchmark T, %d MiB, Debian %s, %d run(s), median: connection round trip %.1f s (in %.1f, out %.1f), "
          "sftp %.1f s (put %.1f, get %.1f): %.2fx sftp; controller peak RSS %d MiB (max %d)"
          % (args.mib, args.release, len(rows), conn, median([r[0] for r in rows]), median([r[1] for r in rows]), sftp,
             median([r[3] for r in rows]), median([r[4] for r in rows]), conn / sftp, median([r[2] for r in rows]),
             max(r[2] for r in rows)))
    print("machine: %d CPUs, load %.2f; maxrss of this script %d MiB" % (
        os.cpu_count(), os.getloadavg()[0], resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024))


if __name__ == "__main__":
    try:
        main()
    except BenchError as exc:
        print("FAILED: %s" % exc)
        sys.exit(1)
