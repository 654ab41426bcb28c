"""The nspawn.nixos.machine connection as a careless user and an attacker would try it, on real systemd.

One sidecar of the lab's FIXTURE image (with python3 in its NixOS settings) on every lab host; the plays
that reach it run over the connection plugin, through the host's real SSH and `systemd-run -M`:

- commands arrive byte for byte: `$`, `${VAR}`, `$$` (the service manager expands them in ExecStart=
  arguments), an `environment:` value with them, and PROPERTY_CASES random texts per host, printed back
  as hex by the machine's shell;
- a task whose machine is powered off while it runs is unreachable, never ok with rc 0;
- files travel in constant memory: a STREAM_MIB MiB file in (copy) and out (fetch), with the controller's
  peak RSS below the file's size.
"""

import json
import os
import random
import subprocess
import threading
import time

import pytest

from faults.harness import provisioned, sidecar_play, wait_for
from lab.ansible_runner import OUTPUT_DIR
from lab.files import random_file, sha256_file

NAME = "conn"
SETTINGS = {"environment": {"systemPackages": {"__nix_raw__": "with pkgs; [ python3 ]"}}}
PROPERTY_CASES = 400
PER_TASK = 50
STREAM_MIB = 256
# What the controller may hold beyond ansible-playbook's own size while a STREAM_MIB file travels.
PEAK_LIMIT_MIB = 160
# Characters a careless command line holds: the service manager's, the shell's and printf's own.
SPECIAL = "$${}%\\'\"`!*?[]()<>|&;#~= \t\n-:"


def provision(state="present"):
    return sidecar_play(NAME, state, SETTINGS)


@pytest.fixture(scope="module")
def sidecars(lab, ansible_runner):
    with provisioned(ansible_runner, NAME, SETTINGS) as run:
        yield run


def inside(tasks, name="inside"):
    """The plays that run tasks in the sidecars: the role (a no-op here) adds them to the run's inventory first."""
    return [provision(), {"name": name, "hosts": "sidecar_%s" % NAME, "gather_facts": False, "tasks": tasks}]


def random_texts(rng, count):
    """count texts of up to 40 characters: mostly the special characters, then any Unicode that D-Bus carries (no
    NUL, which an argv cannot hold; no surrogate or noncharacter, which sd-bus refuses)."""
    texts = []
    for dummy in range(count):
        chars = []
        for dummy2 in range(rng.randint(0, 40)):
            pick = rng.random()
            if pick < 0.5:
                chars.append(rng.choice(SPECIAL))
            elif pick < 0.8:
                chars.append(chr(rng.randint(1, 0x7f)))
            else:
                code = rng.randint(0x80, 0x10FFFF)
                # Not what sd-bus refuses (surrogates, noncharacters: systemd's unichar_is_valid()); the unit
                # tests hold that such a command fails the task with a message before anything runs.
                refused = 0xD800 <= code <= 0xDFFF or 0xFDD0 <= code <= 0xFDEF or (code & 0xFFFE) == 0xFFFE
                chars.append(chr(0xE9 if refused else code))
        texts.append("".join(chars))
    return texts


def shell_quote(text):
    return "'" + text.replace("'", "'\\''") + "'"


def hex_command(texts):
    """A shell command that prints each text as hex on a line of its own."""
    words = " ".join(shell_quote(text) for text in texts)
    return "for s in %s; do printf %%s \"$s\" | od -An -v -tx1 | tr -d ' \\n'; echo; done" % words


def yaml_unsafe(text):
    """text as a YAML double-quoted scalar tagged !unsafe (Ansible templates nothing in it), every character that is
    not printable ASCII escaped (YAML's \\u and \\U escapes), so that any text survives the YAML reader."""
    def escape(char):
        if char in '"\\':
            return "\\" + char
        if " " <= char <= "~":
            return char
        return "\\u%04x" % ord(char) if ord(char) < 0x10000 else "\\U%08x" % ord(char)
    return '!unsafe "%s"' % "".join(escape(char) for char in text)


def unsafe_playbook(plays, commands, directory):
    """A playbook file of plays whose raw tasks named in commands run those commands verbatim (the test's texts
    hold Jinja's {{ and quotes, which the free-form parser and the templar would take for theirs)."""
    text = json.dumps(plays, indent=1)
    for start, (name, command) in enumerate(sorted(commands.items(), key=lambda item: int(item[0].split()[1]))):
        number = name.split()[1]
        text = text.replace('"@@%s@@"' % number, yaml_unsafe(command))
    path = directory / "playbook.yml"
    path.write_text(text)
    return path


def test_commands_arrive_byte_for_byte(lab, ansible_runner, sidecars, tmp_path):
    """systemd.service(5): the service manager expands $VAR, ${VAR} and $$ in ExecStart= arguments; before the
    fix `raw: printf '[%s]\\n' '${HOME}' '$$'` printed [] and [$] and an environment value lost its variables."""
    seed = int(os.environ.get("NSPAWN_PROPERTY_SEED") or random.SystemRandom().randrange(1 << 32))
    texts = random_texts(random.Random(seed), PROPERTY_CASES)
    value = "pa$$w0rd-${HOME}-end $1 `id` %n"
    tasks = [
        {"name": "dollars", "ansible.builtin.raw": "printf '[%s]\\n' '${HOME}' '$$' '$HOME'", "register": "dollars"},
        {"name": "environment", "ansible.builtin.command": "printenv NSPAWN_TEST", "environment": {"NSPAWN_TEST": value},
         "register": "environment", "changed_when": False},
    ]
    commands = {}
    for start in range(0, len(texts), PER_TASK):
        commands["texts %d" % start] = hex_command(texts[start:start + PER_TASK])
        tasks.append({"name": "texts %d" % start, "ansible.builtin.raw": {"_raw_params": "@@%d@@" % start}})
    run = ansible_runner.playbook(unsafe_playbook(inside(tasks), commands, tmp_path))
    assert run.rc == 0, "seed %d: %s" % (seed, run)
    for host in lab.hosts:
        sidecar = "%s-%s" % (host.name, NAME)
        assert run.result("dollars", sidecar)["stdout"].replace("\r\n", "\n") == "[${HOME}]\n[$$]\n[$HOME]\n"
        assert run.result("environment", sidecar)["stdout"] == value
        wrong = []
        for start in range(0, len(texts), PER_TASK):
            got = run.result("texts %d" % start, sidecar)["stdout"].splitlines()
            want = [text.encode("utf-8").hex() for text in texts[start:start + PER_TASK]]
            assert len(got) == len(want), (start, got)
            wrong += [(text, line) for text, line, hexed in zip(texts[start:start + PER_TASK], got, want) if line != hexed]
        assert not wrong, "seed %d: %d of %d texts changed on %s, e.g. %r" % (seed, len(wrong), len(texts), sidecar, wrong[:3])
    print("\nconnection property: %d random texts per host, %d hosts, seed %d (NSPAWN_PROPERTY_SEED)"
          % (len(texts), len(lab.hosts), seed))


def test_files_travel_in_constant_memory(lab, ansible_runner, sidecars, tmp_path):
    host = lab.hosts[0]
    sidecar = "%s-%s" % (host.name, NAME)
    workdir = OUTPUT_DIR / "tmp" / ("stream-%d" % os.getpid())
    workdir.mkdir(parents=True, exist_ok=True)
    source = workdir / "big.bin"
    digest = random_file(source, STREAM_MIB)
    plays = inside(name="stream", tasks=[
        {"name": "in", "ansible.builtin.copy": {"src": str(source), "dest": "/root/big.bin", "mode": "0600"}},
        {"name": "out", "ansible.builtin.fetch": {"src": "/root/big.bin", "dest": str(workdir / "back.bin"), "flat": True}},
        {"name": "remove", "ansible.builtin.file": {"path": "/root/big.bin", "state": "absent"}},
    ])
    try:
        run = ansible_runner.playbook(plays, limit=host.name + "," + sidecar, peak_rss=True)
        assert run.rc == 0, str(run)
        peak = run.peak_rss_mib
        assert sha256_file(workdir / "back.bin") == digest
        print("\nconnection transfer: %d MiB in and out, controller peak RSS %s MiB" % (STREAM_MIB, peak))
        assert peak is not None and peak < PEAK_LIMIT_MIB, "peak RSS %s MiB for a %d MiB file" % (peak, STREAM_MIB)
    finally:
        subprocess.run(["rm", "-rf", str(workdir)], check=False)


def test_a_machine_stopped_while_a_task_runs_is_unreachable(lab, ansible_runner, sidecars):
    """systemd-run --wait exits 0 when it loses the machine's bus: before the fix the task was ok with rc 0."""
    host = lab.hosts[0]
    sidecar = "%s-%s" % (host.name, NAME)
    outcome = {}
    plays = inside([{"name": "long", "ansible.builtin.raw": "sleep 40; echo done"}])
    worker = threading.Thread(target=lambda: outcome.update(run=ansible_runner.playbook(plays, limit=host.name + "," + sidecar)))
    worker.start()
    try:
        assert wait_for(lambda: host.run(["pgrep", "-f", "sleep 40"]).returncode == 0, 60), "the task never started"
        time.sleep(1)
        host.run(["machinectl", "poweroff", NAME], check=True)
        worker.join(120)
        assert not worker.is_alive(), "the task still ran 120 s after its machine was powered off"
        record = outcome["run"].results("long", sidecar)[-1]
        assert record["status"] == "unreachable", record
        assert "machine %s on host %s stopped while the command ran" % (NAME, host.name) in record["result"]["msg"], record
    finally:
        worker.join(120)
        wait_for(lambda: host.run(["machinectl", "show", NAME]).returncode != 0, 60)
        host.run(["machinectl", "start", NAME])
