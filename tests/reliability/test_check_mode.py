"""Check mode predicts a fresh host exactly: for every molecule scenario's converge (its own vars, read
from extensions/molecule/<scenario>/converge.yml), `--check --diff` on a host without the sidecar
reports the same changed tasks, with the same names and in the same order, as the real run after it.

A host without the image is the hard case: the modules after the image cannot plan for an image
that is not there yet, so the role stands in for them under their own names; this test holds
those stand-ins to the real tasks.
"""

import json
import os
import shutil
import tempfile
from pathlib import Path

import pytest
import yaml

from lab.ansible_runner import CHECKOUT, OUTPUT_DIR

SCENARIOS = ("default", "controller_image", "absent")
REPORT = OUTPUT_DIR / "reliability-check-mode.json"


def scenario_plays(scenario, step="converge"):
    """The plays of a scenario's converge.yml (or prepare.yml) as data, on the lab's sidecar hosts."""
    path = CHECKOUT / "extensions" / "molecule" / scenario / ("%s.yml" % step)
    plays = yaml.safe_load(path.read_text())
    for play in plays:
        play["hosts"] = "sidecar_hosts"
        play.pop("post_tasks", None)  # molecule's own checks of its lab
    return plays


def removal(plays):
    """The same plays with sidecar_state: absent: the host as if the sidecar had never been there."""
    result = []
    for play in plays:
        play = dict(play, vars=dict(play.get("vars") or {}, sidecar_state="absent"))
        play.pop("pre_tasks", None)
        result.append(play)
    return result


def succeeded(run, what):
    failed = [(record["host"], record["task"], record["result"].get("msg")) for record in run.failed]
    assert run.rc == 0 and not failed, "%s: %s\n%s" % (what, failed, run)


def changed_tasks(result, host):
    return [record["task"] for record in result.tasks if record["host"] == host and record["status"] == "changed"]


def _record(scenario, host, predicted, done):
    """The changed-task lists of check mode and of the real run, by scenario and host, in REPORT."""
    try:
        data = json.loads(REPORT.read_text())
    except (OSError, ValueError):
        data = {}
    data.setdefault(scenario, {})[host] = {"check": predicted, "real": done}
    REPORT.parent.mkdir(parents=True, exist_ok=True)
    REPORT.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")


@pytest.fixture(scope="module")
def lab_vars(lab):
    """What molecule's create.yml gives the scenarios about the lab (lab_vars.yml)."""
    images = lab.images
    return {
        "lab_images_dir": images["directory"],
        "lab_image_file": str(Path(images["directory"]) / "nixos-fixture-x86_64-linux.tar.xz"),
        "molecule_ephemeral_directory": tempfile.mkdtemp(prefix="check-mode-", dir=str(OUTPUT_DIR)),
    }


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_check_mode_on_a_fresh_host_predicts_the_real_run(scenario, lab, ansible_runner, lab_vars):
    converge = scenario_plays(scenario)
    prepare = CHECKOUT / "extensions" / "molecule" / scenario / "prepare.yml"
    setup = scenario_plays(scenario, "prepare") if prepare.exists() else []
    hosts = [host.name for host in lab.hosts]
    try:
        succeeded(ansible_runner.playbook(removal(converge), extra_vars=lab_vars), "remove what an earlier run left")
        if setup:  # default: the bind sources; absent: the sidecar that its converge removes
            succeeded(ansible_runner.playbook(setup, extra_vars=lab_vars), "prepare.yml")
        check = ansible_runner.playbook(converge, extra_vars=lab_vars, check=True, diff=True)
        succeeded(check, "converge --check --diff")
        # A fresh controller too: check mode fills the controller's image cache (it is not the managed state,
        # and the copy to the host needs it), so the real run would find it there.
        shutil.rmtree(os.path.join(lab_vars["molecule_ephemeral_directory"], "image-cache"), ignore_errors=True)
        real = ansible_runner.playbook(converge, extra_vars=lab_vars)
        succeeded(real, "converge")
        for host in hosts:
            predicted, done = changed_tasks(check, host), changed_tasks(real, host)
            assert predicted == done, "%s on %s: check mode said %s, the real run changed %s" % (scenario, host, predicted, done)
            assert done, "%s on %s: the real run changed nothing" % (scenario, host)
            print("%s on %s: %d changed tasks, predicted exactly: %s" % (scenario, host, len(done), done))
            _record(scenario, host, predicted, done)
    finally:
        succeeded(ansible_runner.playbook(removal(converge), extra_vars=lab_vars), "remove the sidecar")
