"""Faults on lab hosts, each judged by snapshots of the host before and after (snapshot.py).

Image faults (nspawn_image, both image paths: importd's pull and the module's own download,
with a user:password@ in every URL): a download cut off mid-stream, a wrong checksum, a
corrupt tarball, the image server down. A machine that fails to boot (nspawn_machine). Then
the role's sidecar (one story per session, steps in file order, each step computing the ones
it needs): two playbook runs at once, the host rebooting, a failing nixos-rebuild; at the
end the role removes everything it made.

Every fault runs on all lab hosts in one ansible-playbook; the tests, parametrized over
lab_host, judge their host. Counts go to tests/output/reliability-faults.json.
"""

import re

import pytest

from faults.harness import (
    GZ_IMAGE, FaultRun, IMAGE_SERVER_UNIT, XZ_IMAGE, Tally, image_sha256, image_url, judge_unchanged, on_hosts, redacted, role_play,
    run_at_once, run_fault, snapshots, tasks_play, wait_for, with_credentials,
)
from snapshot import differences, machine_state, run_checked

SUITE = "faults"
IMAGE_NAME = "flt-img"
NOBOOT_NAME = "flt-noboot"
SIDECAR_NAME = "flt-sidecar"
# What a run says that gave up waiting for another one's lock (_lock.MachineLock.acquire: "lock_timeout: machine
# NAME is being changed by another task (HOLDER) and it still held the lock PATH after N s"). Word-bounded, so
# that "block" or "unlocked" do not pass for it.
LOCK_MESSAGE = re.compile(r"\block_timeout: machine \S+ is being changed by another task\b.*\bheld the lock\b")

_RUNS = {}


@pytest.fixture(scope="module")
def tally(lab):
    """Counts of this module's faults."""
    return Tally(lab)


def _cached(key, make):
    """make() once per session (every fault runs once, on all hosts)."""
    if key not in _RUNS:
        _RUNS[key] = make()
    return _RUNS[key]


# -- image faults ---------------------------------------------------------------------------------

class ImageFault:
    """One image fault: where the image comes from, how, and what the error must say."""

    def __init__(self, path, method, expected, checksum=None, server_down=False):
        self.path = path              # on the image server, e.g. cut/FILE
        self.method = method          # nspawn_image's method
        self.expected = expected      # regex on the message; {url} is the redacted URL (escaped)
        self.checksum = checksum      # callable(lab) -> nspawn_image's checksum, or None
        self.server_down = server_down


def _pinned(name):
    return lambda lab: "sha256:" + image_sha256(lab, name)


def _sums_url(lab):
    return "sha256:" + with_credentials(image_url(lab, "SHA256SUMS"), "flt", "flt-sums-password")


# What importd says of a damaged tarball (tar's complaint, or the decompressor's; or, when its decoding of the
# download fails before tar says anything, systemd-pull's own "Failed to retrieve image file").
DAMAGED = r"(tar: |[Ff]ailed to decode|decompress|Failed to retrieve image file)"
IMAGE_FAULTS = {
    "cut download": ImageFault("cut/" + GZ_IMAGE, "download", r"^Downloading {url} was cut short: received \d+ of \d+ bytes",
                               checksum=_pinned(GZ_IMAGE)),
    "cut pull": ImageFault("cut/" + GZ_IMAGE, "pull", r"^Pulling {url} as flt-img failed \(rc=\d+\):(.|\n)*partial file"),
    # The .tar.gz with the .tar.xz's sha256 pinned.
    "wrong checksum": ImageFault(GZ_IMAGE, "download", r"^Checksum mismatch for {url}: expected sha256 %(xz)s, got %(gz)s; "
                                 r"the download was discarded", checksum=_pinned(XZ_IMAGE)),
    "corrupt tarball download": ImageFault("corrupt/" + GZ_IMAGE, "download",
                                           r"^Importing the download of {url} as flt-img failed \(rc=\d+\):(.|\n)*" + DAMAGED),
    # importd works in its own service: the module quotes its journal, where tar or the decompressor says what is wrong.
    "corrupt tarball pull": ImageFault("corrupt/" + GZ_IMAGE, "pull", r"^Pulling {url} as flt-img failed \(rc=\d+\):(.|\n)*" + DAMAGED),
    # The SHA256SUMS URL, with a password, is the first request.
    "server down download": ImageFault(GZ_IMAGE, "download", r"^Fetching {sums} failed: .*(refused|Connection)",
                                       checksum=_sums_url, server_down=True),
    "server down pull": ImageFault(GZ_IMAGE, "pull", r"^Pulling {url} as flt-img failed \(rc=\d+\):(.|\n)*(connect|Connection)",
                                   server_down=True),
}
PASSWORD = "flt-image-password"


def _image_fault_run(lab, ansible_runner, fault):
    # The module's own downloads carry a password (it must never show); importd is never given one
    # (nspawn_image refuses method=pull for such a URL, see test_secrets.py).
    url = image_url(lab, fault.path) if fault.method == "pull" else with_credentials(image_url(lab, fault.path), "flt", PASSWORD)
    args = {"name": IMAGE_NAME, "url": url, "method": fault.method, "timeout": 60}
    if fault.method == "pull":
        args["verify"] = "no"
    if fault.checksum:
        args["checksum"] = fault.checksum(lab)
    plays = [tasks_play("image fault", [{"name": "Fetch the image", "nspawn.nixos.nspawn_image": args, "ignore_errors": True}])]
    if fault.server_down:
        on_hosts(lab, lambda host: run_checked(host, ["systemctl", "stop", IMAGE_SERVER_UNIT]))
    try:
        run = run_fault(lab, ansible_runner, plays)
    finally:
        if fault.server_down:
            on_hosts(lab, lambda host: run_checked(host, ["systemctl", "start", IMAGE_SERVER_UNIT]))
    run.notes.update(url=url, args=args)
    return run


@pytest.mark.parametrize("fault", sorted(IMAGE_FAULTS))
def test_image_fault(fault, lab, lab_host, ansible_runner, tally):
    """The image fault fails the task with a clear message (what failed, the URL without its password)
    and leaves nothing: no image, no .part file, no hidden importd copy, no origin record."""
    spec = IMAGE_FAULTS[fault]
    run = _cached(("image", fault), lambda: _image_fault_run(lab, ansible_runner, spec))
    host = lab_host.name
    record = run.record("Fetch the image", host)
    judge_unchanged(tally, SUITE, fault, run, host)
    result = record["result"]
    assert record["status"] == "failed" and not result.get("changed"), run.explain(host)
    sums = spec.checksum(lab)[len("sha256:"):] if spec.checksum else ""
    expected = spec.expected.replace("{url}", re.escape(redacted(run.notes["url"]))).replace("{sums}", re.escape(redacted(sums)))
    expected %= {"xz": image_sha256(lab, XZ_IMAGE), "gz": image_sha256(lab, GZ_IMAGE)}
    assert re.search(expected, result["msg"]), "message %r does not match %r" % (result["msg"], expected)
    output = run.result.stdout + run.result.stderr
    assert PASSWORD not in output and "flt-sums-password" not in output, run.explain(host)


# -- a machine that fails to boot -----------------------------------------------------------------

def _noboot_run(lab, ansible_runner):
    """An image with an os-release but no init: systemd-nspawn starts, finds nothing to execute, exits."""
    root = "/var/lib/machines/" + NOBOOT_NAME
    script = "mkdir -p %s/etc %s/usr/lib && echo ID=flt-noboot > %s/etc/os-release" % (root, root, root)
    on_hosts(lab, lambda host: run_checked(host, ["sh", "-c", script]))
    try:
        start = {"name": "Start the machine", "ignore_errors": True,
                 "nspawn.nixos.nspawn_machine": {"name": NOBOOT_NAME, "state": "running", "enabled": True, "timeout": 60}}
        plays = [tasks_play("machine that fails to boot", [start])]
        return run_fault(lab, ansible_runner, plays)
    finally:
        on_hosts(lab, lambda host: host.run(["sh", "-c", "rm -rf --one-file-system %s; systemctl reset-failed systemd-nspawn@%s.service"
                                                   % (root, NOBOOT_NAME)]))


def test_machine_fails_to_boot(lab, lab_host, ansible_runner, tally):
    """Starting a machine that cannot boot fails with the last lines of its unit's journal, and the
    machine is neither left running nor enabled at boot."""
    run = _cached("noboot", lambda: _noboot_run(lab, ansible_runner))
    host = lab_host.name
    record = run.record("Start the machine", host)
    # systemd-nspawn@.service (--private-users=pick) chowns the tree to the machine's UID range at its
    # first start, and makes its empty runtime directories: both systemd's doing, not leftovers.
    judge_unchanged(tally, SUITE, "machine fails to boot", run, host, new_dirs=True, why="apart from systemd-nspawn's chown and run dirs",
                    ignore=("machines_dir/%s/uid" % NOBOOT_NAME, "machines_dir/%s/gid" % NOBOOT_NAME))
    message = record["result"]["msg"]
    assert record["status"] == "failed", run.explain(host)
    assert record["result"]["actions"] == ["start"], run.explain(host)
    assert re.search(r"Last lines of the journal of systemd-nspawn@flt-noboot\.service:\n", message), message
    # systemd-nspawn's own line (it found no init) and PID 1's verdict on the unit.
    assert re.search(r"systemd-nspawn\[\d+\]: .*(/sbin/init|execv).*No such file or directory", message), message
    assert re.search(r"systemd-nspawn@flt-noboot\.service: (Main process exited|Failed with result)", message), message


# -- the role's sidecar: two runs at once, a host reboot, a failing nixos-rebuild -------------------

class SidecarStory:
    """The role's sidecar SIDECAR_NAME on every lab host, through the steps of the tests below.
    Each step runs once per session and first runs the steps it needs."""

    def __init__(self, lab, ansible_runner):
        self.lab = lab
        self.runner = ansible_runner
        self.steps = {}
        self.variables = {
            "sidecar_name": SIDECAR_NAME,
            "sidecar_image_url": image_url(lab),
            "sidecar_image_checksum": image_sha256(lab),
            "sidecar_nixos_settings": {"environment": {"etc": {"flt-sidecar": {"text": "nothing lost\n"}}}},
            "sidecar_wait_timeout": 120,
            "sidecar_pull_poll": 1,
        }

    def _step(self, name, make):
        if name not in self.steps:
            self.steps[name] = make()
        return self.steps[name]

    def plays(self, **overrides):
        """The role's play with the story's variables (and overrides)."""
        return [role_play("sidecar %s" % SIDECAR_NAME, dict(self.variables, **overrides))]

    def remove(self):
        """The role with sidecar_state=absent."""
        return self.runner.playbook(self.plays(sidecar_state="absent"))

    def concurrent(self):
        """A single clean run (the reference), removal, two runs at once, a third run."""
        def make():
            baseline = snapshots(self.lab)
            single = run_fault(self.lab, self.runner, self.plays())
            removed = self.remove()
            both = run_at_once(self.lab, self.runner, self.plays())
            third = run_fault(self.lab, self.runner, self.plays())
            return {"baseline": baseline, "single": single, "removed": removed, "both": both, "third": third}
        return self._step("concurrent", make)

    def reboot(self):
        """The converged sidecar, the hosts rebooting, the machine back, the role again."""
        def make():
            self.concurrent()
            before = snapshots(self.lab)
            seconds = on_hosts(self.lab, lambda host: self.lab.reboot(host.name))
            back = on_hosts(self.lab, lambda host: wait_for(lambda: machine_state(host, SIDECAR_NAME) == "running", 60))
            states = on_hosts(self.lab, lambda host: machine_state(host, SIDECAR_NAME))
            rerun = self.runner.playbook(self.plays())
            run = FaultRun(before, [rerun], snapshots(self.lab))
            run.notes.update(seconds=seconds, back=back, states=states)
            return run
        return self._step("reboot", make)

    def failing_rebuild(self):
        """The converged sidecar, a NixOS change that fails a unit (rollback), then the role as before."""
        def make():
            self.concurrent()
            marker = {"environment": {"etc": {"flt-sidecar": {"text": "nixos-fixture-fail-unit\n"}}}}
            current_before = on_hosts(self.lab, _current_system)
            failed = run_fault(self.lab, self.runner, self.plays(sidecar_nixos_settings=marker))
            failed.notes["current_before"] = current_before
            failed.notes["current_after"] = on_hosts(self.lab, _current_system)
            again = run_fault(self.lab, self.runner, self.plays())
            return {"failed": failed, "again": again}
        return self._step("failing_rebuild", make)

    def removed(self):
        """The role with sidecar_state=absent, after everything."""
        def make():
            baseline = self.concurrent()["baseline"]
            result = self.remove()
            return FaultRun(baseline, [result], snapshots(self.lab))
        return self._step("removed", make)


def _current_system(host):
    """The target of /run/current-system inside the running sidecar (the active generation)."""
    leader = host.run(["machinectl", "show", SIDECAR_NAME, "-p", "Leader", "--value"]).stdout.strip()
    return host.run(["readlink", "/proc/%s/root/run/current-system" % leader]).stdout.strip() if leader else ""


@pytest.fixture(scope="module")
def story(lab, ansible_runner):
    """The sidecar story of this module; the sidecar is removed at the end in any case."""
    the_story = _cached("story", lambda: SidecarStory(lab, ansible_runner))
    yield the_story
    if the_story.steps and "removed" not in the_story.steps:
        the_story.removed()


# systemd-nspawn's own runtime locks, named after the inode of the image: a new image, a new name.
NSPAWN_LOCKS = "/run/systemd/nspawn/locks/"


def _normalized(snapshot):
    """A snapshot without what differs between two equal runs: the time in the origin record, and
    systemd-nspawn's lock files."""
    origin = "/var/lib/nspawn-nixos/origin/%s.json" % SIDECAR_NAME
    files = {path: entry for path, entry in snapshot["files"].items() if not path.startswith(NSPAWN_LOCKS)}
    if origin in files:
        files[origin] = {key: value for key, value in files[origin].items() if key != "sha256"}
    return dict(snapshot, files=files)


def _host_failures(result, host):
    return [record for record in result.tasks if record["host"] == host and record["status"] in ("failed", "unreachable")
            and not record["ignored"]]


def test_two_runs_at_once(lab_host, story, tally):
    """Two playbook runs at once against a host without the sidecar: both succeed or one fails
    clearly about the lock; the host ends as after a single run (one image, one running machine,
    the settings file, no leftovers), and a third run changes nothing."""
    steps = story.concurrent()
    host = lab_host.name
    single, both, third = steps["single"], steps["both"], steps["third"]
    assert not _host_failures(single.result, host), single.explain(host)
    assert not _host_failures(steps["removed"], host), str(steps["removed"])
    outcomes = [_host_failures(result, host) for result in both.results]
    for failures in outcomes:
        unclear = [record for record in failures if not LOCK_MESSAGE.search(str(record["result"].get("msg", "")))]
        assert not unclear, "a concurrent run failed without naming the lock:\n%s" % both.explain(host)
    assert any(not failures for failures in outcomes), "neither concurrent run converged:\n%s" % both.explain(host)
    # They did overlap: a task of one waited for the machine's lock while the other changed the machine.
    waited = "for another task that was changing machine %s" % SIDECAR_NAME
    assert any(waited in " ".join((result.stdout + result.stderr).split()) for result in both.results), \
        "the two runs did not contend for the machine's lock:\n%s" % both.explain(host)

    after = both.after[host]
    new_images = [row for row in after["image_list"] if row not in steps["baseline"][host]["image_list"]]
    assert new_images == [[SIDECAR_NAME, "directory", "no"]], new_images
    assert after["machines"]["states"].get(SIDECAR_NAME) == "running", after["machines"]
    changes = differences(_normalized(single.after[host]), _normalized(after))
    tally.add(SUITE, "two runs at once", host, not changes, "compared with a single clean run")
    assert not changes, "two runs at once left the host unlike a single run:\n  %s\n%s" % ("\n  ".join(changes), both.explain(host))

    assert not _host_failures(third.result, host) and third.result.stats[host]["changed"] == 0, third.explain(host)
    judge_unchanged(tally, SUITE, "third run after two at once", third, host)


# At boot the machine starts afresh: its leader PID and the journal are new, but neither is in a
# snapshot (snapshot.py records files, images, machine names and states, enabled units), so
# nothing needs to be excluded from the comparison.
def test_host_reboot(lab_host, story, tally):
    """The enabled sidecar runs again after the host rebooted, and the role then changes nothing."""
    run = story.reboot()
    host = lab_host.name
    assert run.notes["back"][host], "machine %s not running 60 s after the reboot of %s: %s" % (
        SIDECAR_NAME, host, run.notes["states"][host])
    assert not _host_failures(run.result, host) and run.result.stats[host]["changed"] == 0, run.explain(host)
    judge_unchanged(tally, SUITE, "host reboot", run, host)


def test_failing_nixos_rebuild(lab_host, story, tally):
    """A NixOS change whose rebuild fails a unit: the role fails clearly, rolls back (the previous
    generation is the default and active), puts the previous ansible.nix back; the next run with
    the previous settings changes nothing."""
    steps = story.failing_rebuild()
    failed, again = steps["failed"], steps["again"]
    host = lab_host.name
    record = failed.record("Write the NixOS configuration and run nixos-rebuild", host)
    message = record["result"].get("msg", "")
    assert record["status"] == "failed", failed.explain(host)
    for expected in (r"nixos-rebuild switch in machine %s failed \(rc=4; switch-to-configuration status 4: units failed; " % SIDECAR_NAME,
                     r"failed units: fixture-fail\.service\)",
                     r"Rolled back to the previous generation", r"previous files in /etc/nixos were put back"):
        assert re.search(expected, message), "%r not in the message:\n%s" % (expected, message)
    # The failed generation was made, then left: its link is the one change allowed.
    profiles = failed.before[host]["images"][SIDECAR_NAME]["profiles"]
    newest = max(int(name.split("-")[1]) for name in profiles if re.match(r"^system-\d+-link$", name))
    failed_link = "images/%s/profiles/system-%d-link" % (SIDECAR_NAME, newest + 1)
    judge_unchanged(tally, SUITE, "failing nixos-rebuild", failed, host, ignore=(failed_link,),
                    why="apart from the failed generation's link")
    assert failed_link.rsplit("/", 1)[1] in failed.after[host]["images"][SIDECAR_NAME]["profiles"], failed.explain(host)
    assert failed.notes["current_after"][host] == failed.notes["current_before"][host] != "", failed.notes
    assert not _host_failures(again.result, host) and again.result.stats[host]["changed"] == 0, again.explain(host)
    judge_unchanged(tally, SUITE, "role again after the failing rebuild", again, host)


def test_sidecar_removed(lab_host, story, tally):
    """At the end the role removes the sidecar and leaves the host as it was before the story, apart
    from empty directories (/etc/systemd/nspawn, /var/lib/nspawn-nixos/origin, systemd-nspawn's
    /run/systemd/nspawn/*), which stay, like a package's directories."""
    run = story.removed()
    host = lab_host.name
    assert not _host_failures(run.result, host), run.explain(host)
    judge_unchanged(tally, SUITE, "sidecar removed", run, host, ignore=("files/" + NSPAWN_LOCKS,), new_dirs=True,
                    why="apart from new empty directories")
