"""Interrupted transfers on lab hosts: whatever nspawn_image started ends recorded, or cancelled and cleaned.

The image comes from the lab image server's slow mode (/slow/FILE, 4 MiB/s: about 20 s for the
fixture), so that a transfer can be interrupted in the middle. Each case runs nspawn_image on every
lab host at once (Debian 12: machinectl pull-tar; Debian 13: importctl) and interrupts it the way a
user does:

- Ctrl-C, sync: SIGINT to the ansible-playbook process group while importd's transfer, or the
  module's own download, runs. With SSH pipelining sshd sends the module no signal when the
  connection goes: it finishes and records (with a PTY it would get SIGHUP and cancel). Whole
  either way.
- SIGTERM to the module on the host: it cancels importd's transfer (machinectl/importctl only
  detach on SIGINT: "Press C-c to continue download in background") and removes its partial
  files: the host is as before (snapshot), and the message says so.
- Ctrl-C, async (as the role's sidecar_pull_async): the job goes on without ansible-playbook and
  ends with the image and its origin recorded.
- SIGKILL to the module (the OOM killer), and the async timeout (async_wrapper kills the job's
  process group with SIGKILL): no handler runs; importd goes on, a partial download stays. The
  pending record the module wrote before the transfer tells the next run what the image or
  transfer is: it cancels or records, removes the partial file, and converges without the "no
  origin record" warning (action recover).

Every case ends with a second, uninterrupted run and removes the image. Counts go to
tests/output/reliability-faults.json (suite "interrupt").
"""

import json
import os
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from faults.harness import GZ_IMAGE, FaultRun, Tally, image_sha256, image_url, judge_unchanged, on_hosts, snapshots, tasks_play, wait_for
from lab.ansible_runner import OUTPUT_DIR, PlaybookResult

SUITE = "interrupt"
NAME = "int-img"
SLOW = "slow/" + GZ_IMAGE
# What a host shows of NAME: importd's transfers into it, the module's partial files, the records.
STATE_SCRIPT = r'''
import json, os, subprocess
tool = "importctl" if os.path.exists("/usr/bin/importctl") else "machinectl"
out = subprocess.run([tool, "list-transfers", "--no-legend", "--no-pager"], capture_output=True, text=True).stdout
store = "/var/lib/machines"
LOCK = "/run/nspawn-nixos/locks/%(name)s.lock"
print(json.dumps({
    "transfers": [line.split() for line in out.splitlines() if " %(name)s " in " %%s " %% line],
    "image": os.path.isdir(os.path.join(store, "%(name)s")),
    "partial": sorted(n for n in os.listdir(store) if n.startswith(".nspawn-nixos-%(name)s@")) if os.path.isdir(store) else [],
    "partial_size": sum(os.path.getsize(os.path.join(store, n)) for n in os.listdir(store)
                        if n.startswith(".nspawn-nixos-%(name)s@") and n.endswith(".part")) if os.path.isdir(store) else 0,
    "origin": os.path.exists("/var/lib/nspawn-nixos/origin/%(name)s.json"),
    "pending": os.path.exists("/var/lib/nspawn-nixos/pending/%(name)s.json"),
    # a module working on NAME holds its lock (nspawn.nixos's per-machine flock)
    "modules": os.path.exists(LOCK) and subprocess.run(["flock", "-n", "-s", LOCK, "true"]).returncode != 0,
}))
''' % {"name": NAME}


def host_state(host):
    done = host.run(["python3", "-c", STATE_SCRIPT])
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def states(lab):
    return on_hosts(lab, host_state)


# Send a signal (sys.argv[1]) to the module on the host: the process holding NAME's lock. SIGTERM as systemd
# sends it; SIGKILL as the OOM killer or ansible's async_wrapper at the async timeout (no handler runs).
KILL_SCRIPT = r'''
import os, signal, sys
lock = "/run/nspawn-nixos/locks/%(name)s.lock"
for pid in filter(str.isdigit, os.listdir("/proc")):
    try:
        fds = [os.readlink("/proc/%%s/fd/%%s" %% (pid, fd)) for fd in os.listdir("/proc/%%s/fd" %% pid)]
    except OSError:
        continue
    if lock in fds:
        os.kill(int(pid), int(sys.argv[1]))
        print(pid)
''' % {"name": NAME}


class Case:
    """One interruption: how the module fetches, sync or async, how it is interrupted, what the host shows after."""

    def __init__(self, method, async_seconds=0, poll=0, interrupt="ctrl-c", outcome="either"):
        self.method = method
        self.async_seconds = async_seconds
        self.poll = poll
        # "ctrl-c": SIGINT to ansible-playbook's process group once the transfer runs on every host;
        # "sigterm" / "sigkill": that signal to the module on every host; None: no interruption (the async timeout).
        self.interrupt = interrupt
        # "cancelled" (the host as before), "recorded" (image and origin), "either" of the two, or
        # "pending" (killed: the pending record stays for the next run), "pending-or-recorded".
        self.outcome = outcome

    def task(self, lab, url_path, key, interrupted=True):
        """The task of the interrupted run, or (interrupted=False) of the next run: the same request, without async."""
        # A query of its own per case: importd keeps a hidden copy of every URL it pulled (.tar-URL, reused
        # when the server's ETag matches), so a second pull of one URL would not transfer anything.
        url = "%s?case=%s" % (image_url(lab, url_path), key.replace(" ", "-"))
        args = {"name": NAME, "url": url, "method": self.method, "timeout": 120}
        if self.method == "pull":
            args["verify"] = "no"
        else:
            args["checksum"] = "sha256:" + image_sha256(lab, GZ_IMAGE)
        task = {"name": "Fetch the image", "nspawn.nixos.nspawn_image": args}
        if self.async_seconds and interrupted:
            task.update({"async": self.async_seconds, "poll": self.poll})
        return task


CASES = {
    # Ctrl-C: with SSH pipelining (no PTY), sshd sends the module no signal when the connection goes: the
    # module finishes and records. With a PTY it gets SIGHUP and cancels. Either is whole.
    "ctrl-c sync pull": Case("pull"),
    "ctrl-c sync download": Case("download"),
    "sigterm sync pull": Case("pull", interrupt="sigterm", outcome="cancelled"),
    "sigterm sync download": Case("download", interrupt="sigterm", outcome="cancelled"),
    "ctrl-c async pull": Case("pull", async_seconds=300, poll=2, outcome="recorded"),
    "ctrl-c async download": Case("download", async_seconds=300, poll=2, outcome="recorded"),
    "sigkill sync pull": Case("pull", interrupt="sigkill", outcome="pending"),
    "sigkill sync download": Case("download", interrupt="sigkill", outcome="pending"),
    # async_wrapper kills the job's process group (SIGKILL) after 4 s; a module it misses finishes and records.
    "async timeout pull": Case("pull", async_seconds=4, poll=1, interrupt=None, outcome="pending-or-recorded"),
    "async timeout download": Case("download", async_seconds=4, poll=1, interrupt=None, outcome="pending-or-recorded"),
}
_RUNS = {}


def _transfer_running(lab, case):
    """True once every host shows the transfer under way (importd's, or the module's download past 1 MiB)."""
    def running(host):
        state = host_state(host)
        return bool(state["transfers"]) if case.method == "pull" else state["partial_size"] > (1 << 20)
    return all(on_hosts(lab, running).values())


def _playbook(ansible_runner, plays, interrupt_when=None, interrupt=None, timeout=600):
    """ansible-playbook in its own process group; once interrupt_when() is true, interrupt(process) (default:
    SIGINT to the group, as Ctrl-C)."""
    work = Path(tempfile.mkdtemp(prefix="interrupt-", dir=OUTPUT_DIR / "tmp"))
    path, json_path = work / "playbook.yml", work / "results.json"
    path.write_text(json.dumps(plays))
    argv = [str(ansible_runner.bin_dir / "ansible-playbook"), str(path)]
    started = time.monotonic()
    process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ansible_runner.env(json_path),
                               cwd=work, start_new_session=True)
    interrupted = False
    if interrupt_when is not None:
        interrupted = wait_for(lambda: process.poll() is not None or interrupt_when(), 120)
        interrupted = interrupted and process.poll() is None
        if interrupted:
            if interrupt is None:
                os.killpg(process.pid, signal.SIGINT)
            else:
                interrupt(process)
    stdout, stderr = process.communicate(timeout=timeout)
    data = json.loads(json_path.read_text()) if json_path.exists() else {}
    result = PlaybookResult(argv, process.returncode, stdout, stderr, round(time.monotonic() - started, 2),
                            data.get("tasks", []), data.get("stats", {}))
    return result, interrupted


def _settled(lab, case):
    """Wait until no module and no transfer of NAME runs on any host (an async job may go on for a while)."""
    def quiet():
        found = states(lab)
        if case.outcome.startswith("pending"):  # the killed job's transfer goes on: only the module must be gone
            return found if all(not s["modules"] for s in found.values()) else None
        return found if all(not s["modules"] and not s["transfers"] for s in found.values()) else None
    return wait_for(quiet, 180, interval=1) or states(lab)


def _run_case(lab, ansible_runner, key):
    case = CASES[key]
    before = snapshots(lab)
    plays = [tasks_play("interrupt: " + key, [case.task(lab, SLOW, key)])]

    def signal_modules(process):
        number = str(int(signal.SIGTERM if case.interrupt == "sigterm" else signal.SIGKILL))
        assert all(on_hosts(lab, lambda host: host.run(["python3", "-c", KILL_SCRIPT, number]).stdout.strip()).values())

    result, interrupted = _playbook(ansible_runner, plays, (lambda: _transfer_running(lab, case)) if case.interrupt else None,
                                    signal_modules if case.interrupt in ("sigterm", "sigkill") else None)
    after_interrupt = _settled(lab, case)
    run = FaultRun(before, [result], snapshots(lab), notes={"interrupted": interrupted, "state": after_interrupt})
    # The next run, not interrupted: it must converge from whatever the interruption left.
    again = [tasks_play("after the interruption: " + key, [case.task(lab, SLOW, key, interrupted=False)])]
    run.notes["again"] = _playbook(ansible_runner, again)[0]
    run.notes["final"] = states(lab)
    cleanup = [tasks_play("remove the image", [{"name": "Remove the image",
                                                "nspawn.nixos.nspawn_image": {"name": NAME, "state": "absent"}}])]
    run.notes["cleanup"] = _playbook(ansible_runner, cleanup)[0]
    return run


@pytest.fixture(scope="module")
def tally(lab):
    return Tally(lab)


@pytest.mark.parametrize("key", list(CASES))
def test_interrupted_transfer(key, lab, lab_host, ansible_runner, tally):
    """What the interruption leaves is complete and recorded, or nothing; the next run converges."""
    case = CASES[key]
    run = _RUNS.get(key) or _RUNS.setdefault(key, _run_case(lab, ansible_runner, key))
    host = lab_host.name
    state = run.notes["state"][host]
    explain = "%s on %s: state after the interruption %s\n%s" % (key, host, state, run.explain(host)[-6000:])
    if case.interrupt:
        assert run.notes["interrupted"], "the playbook ended before the transfer could be interrupted\n" + explain
    outcome = case.outcome
    if outcome == "either":
        outcome = "recorded" if state["image"] else "cancelled"
    elif outcome == "pending-or-recorded":
        outcome = "pending" if state["pending"] else "recorded"
    if outcome != "pending":  # SIGKILL leaves the module's partial download, for the next run to remove
        assert not state["partial"], explain
    if case.interrupt == "sigterm":
        record = run.record("Fetch the image", host)
        assert record["status"] == "failed", explain
        assert record["result"]["msg"].startswith("Interrupted by signal 15 while fetching image %s: nothing of the transfer "
                                                  "was left" % NAME), explain
    if outcome == "cancelled":
        assert not state["transfers"] and not state["pending"] and not state["image"] and not state["origin"], explain
        # The host as before, but for the (empty) directory of pending records.
        judge_unchanged(tally, SUITE, key, run, host, new_dirs=True, why="cancelled and cleaned")
    elif outcome == "recorded":
        assert state["image"] and state["origin"] and not state["pending"] and not state["transfers"], explain
        tally.add(SUITE, key, host, None, "finished and recorded")
    else:  # killed: the pending record says what the image or transfer is
        assert state["pending"] and not state["origin"], explain
        tally.add(SUITE, key, host, None, "pending record left for the next run")
    # The next run: converged, recorded, and never the "no origin record" warning.
    again = run.notes["again"]
    record = again.results("Fetch the image", host)[-1]
    assert record["status"] in ("ok", "changed"), explain + "\nnext run:\n" + str(again)
    warnings = " ".join(record["result"].get("warnings") or [])
    assert "no origin record" not in warnings and "recorded origin differs" not in warnings, warnings
    if outcome == "pending":
        assert record["result"]["actions"][0] == "recover", record["result"]["actions"]
        assert "an earlier run was interrupted while fetching image %s" % NAME in warnings, warnings
    final = run.notes["final"][host]
    assert final["image"] and final["origin"] and not final["pending"] and not final["partial"] and not final["transfers"], final
    assert run.notes["cleanup"].rc == 0, str(run.notes["cleanup"])
