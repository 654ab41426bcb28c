# -*- coding: utf-8 -*-
# Copyright (c) nspawn.nixos contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Run a module's main() against a scripted sequence of commands.

A case (from the YAML files next to the tests) lists the module input, the exact argv of
every run_command call in order with its rc/out/err, and the expected result. The harness
patches AnsibleModule.run_command, exit_json, fail_json, warn and get_bin_path, the
filesystem probes (importd present?), the image store, origin and settings directories,
and the clock of the polling loops.

A scripted command may also check the data written to its stdin (``expect_data``,
``data_contains``, ``data_lacks``) or be executed for real (``execute: true``, e.g.
nix-instantiate --parse; ``execute: inside`` runs what follows systemd-run's options on
this machine instead of in a container). ``symlinks`` creates symlinks before the run;
``check_files()`` asserts on files after it.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import re
import shutil
import subprocess
import tarfile
from unittest import mock

import yaml

from ansible import release as ansible_release
from ansible.module_utils import basic
from ansible.module_utils.common.text.converters import to_bytes

try:  # ansible-core >= 2.19
    from ansible.module_utils.testing import patch_module_args
except ImportError:  # ansible-core 2.16 - 2.18: AnsibleModule reads basic._ANSIBLE_ARGS
    import contextlib

    @contextlib.contextmanager
    def patch_module_args(args=None):
        """The module arguments for AnsibleModule, the way ansible-core before 2.19 takes them in tests."""
        serialized = to_bytes(json.dumps({"ANSIBLE_MODULE_ARGS": args or {}}))
        with mock.patch.object(basic, "_ANSIBLE_ARGS", serialized):
            yield

from fake_clock import FakeClock
from ansible_collections.nspawn.nixos.plugins.module_utils._systemd import _machinectl, _records
from ansible_collections.nspawn.nixos.plugins.module_utils._core import _lock
from ansible_collections.nspawn.nixos.plugins.module_utils._backends import image as _image

HERE = os.path.dirname(__file__)

# Commands that only read; everything else changes the host.
READ_ONLY = (
    ("systemctl", "--version"),
    ("systemctl", "is-enabled"),
    ("machinectl", "show"),
    ("machinectl", "show-image"),
    ("machinectl", "list"),
    ("machinectl", "list-images"),
    ("machinectl", "list-transfers"),
    ("importctl", "list-transfers"),
    ("journalctl",),
    ("systemd-run",),  # is-system-running inside the machine, nix-instantiate --parse
    ("nix-instantiate",),
)
# What changes the machine although it runs through systemd-run (nspawn-nixos-gc: nixos_config's
# nix-env --delete-generations and nix-store --gc; the lock computation only writes a scratch copy).
MUTATING_INSIDE = ("nixos-rebuild", "chpasswd", "nspawn-nixos-gc")


def is_mutating(argv):
    if argv[:1] == ["systemd-run"] and any(word in arg for arg in argv for word in MUTATING_INSIDE):
        return True
    argv = [os.path.basename(argv[0])] + list(argv[1:]) if argv else argv
    return not any(tuple(argv[:len(prefix)]) == prefix for prefix in READ_ONLY)


class Exit(Exception):
    def __init__(self, result):
        super(Exit, self).__init__(result)
        self.result = result


def load_cases(filename):
    with open(os.path.join(HERE, filename)) as handle:
        cases = yaml.safe_load(handle)
    return [case for case in cases if isinstance(case, dict) and "id" in case]


def substitute(value, mapping):
    """Replace {key} placeholders in every string of a nested structure."""
    if isinstance(value, str):
        for key, replacement in mapping.items():
            value = value.replace("{%s}" % key, str(replacement))
        return value
    if isinstance(value, list):
        return [substitute(item, mapping) for item in value]
    if isinstance(value, dict):
        return dict((substitute(key, mapping), substitute(item, mapping)) for key, item in value.items())
    return value


def expand_commands(commands):
    expanded = []
    for entry in commands or []:
        if isinstance(entry, list):
            entry = dict(command=entry)
        for dummy in range(entry.get("repeat", 1)):
            expanded.append(entry)
    return expanded


class Outcome(object):
    def __init__(self, result, failed, calls, warnings, inputs=None):
        self.result = result
        self.failed = failed
        self.calls = calls
        self.warnings = warnings
        self.inputs = inputs if inputs is not None else [None] * len(calls)

    @property
    def mutating_calls(self):
        return [argv for argv in self.calls if is_mutating(argv)]


def _argv_matches(expected, argv):
    if len(expected) != len(argv):
        return False
    for want, got in zip(expected, argv):
        if want == "*":
            continue
        if want.startswith("re:"):
            if not re.match(want[3:] + "$", got):
                return False
        elif want != got:
            return False
    return True


def run_module(main, case, tmp_path, check_mode=None, commands=None):
    """Run main() for a case; returns an Outcome. commands overrides the case's run_command list."""
    store = tmp_path / "machines"
    origin_dir = tmp_path / "origin"
    store.mkdir(exist_ok=True)
    nspawn_dir = tmp_path / "nspawn"
    mapping = dict(case.get("_mapping", {}), tmp=str(tmp_path), store=str(store), origin=str(origin_dir), nspawn=str(nspawn_dir))
    case = substitute(copy.deepcopy(case), mapping)
    script = expand_commands(case.get("run_command") if commands is None else commands)
    if check_mode is None:
        check_mode = case.get("check_mode", False)
    for name, record in (case.get("origin_records") or {}).items():
        origin_dir.mkdir(exist_ok=True)
        (origin_dir / ("%s.json" % name)).write_text(json.dumps(record))
    for name, record in (case.get("nixpkgs_records") or {}).items():
        (tmp_path / "nixpkgs-records").mkdir(exist_ok=True)
        (tmp_path / "nixpkgs-records" / ("%s.json" % name)).write_text(json.dumps(record))
    for path, content in (case.get("files") or {}).items():
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w") as handle:
            handle.write(content)
    for path, target in (case.get("symlinks") or {}).items():
        os.makedirs(os.path.dirname(path), exist_ok=True)
        os.symlink(target, path)

    calls, warnings, inputs = [], [], []
    bins = case.get("bins", ["machinectl", "importctl", "systemctl"])

    def fake_run_command(self, args, check_rc=False, environ_update=None, **kwargs):
        assert isinstance(args, list), "commands must be argv lists, got %r" % (args,)
        assert environ_update and environ_update.get("LANG") == "C" and environ_update.get("LC_ALL") == "C"
        assert not check_rc
        calls.append(list(args))
        inputs.append(kwargs.get("data"))
        if len(calls) > len(script):
            raise AssertionError("unexpected command #%d: %r" % (len(calls), args))
        entry = script[len(calls) - 1]
        assert _argv_matches(entry["command"], args), "command #%d:\n  expected %r\n  got      %r" % (
            len(calls), entry["command"], args)
        if "expect_file_sha256" in entry:
            path = args[entry.get("file_arg", -2)]
            with open(path, "rb") as handle:
                assert hashlib.sha256(handle.read()).hexdigest() == entry["expect_file_sha256"]
        if "effect" in entry:
            apply_effect(entry["effect"], args)
        check_data(entry, kwargs.get("data"))
        if "signal" in entry:  # as a signal arriving while the command runs: the module's handler raises here
            os.kill(os.getpid(), entry["signal"])
        if entry.get("execute"):
            return execute(args, kwargs.get("data"), entry["execute"])
        return entry.get("rc", 0), entry.get("out", ""), entry.get("err", "")

    def fake_exit_json(self, **kwargs):
        raise Exit(dict(kwargs, failed=False))

    def fake_fail_json(self, msg, **kwargs):
        raise Exit(dict(kwargs, msg=msg, failed=True))

    def fake_get_bin_path(self, name, required=False, opt_dirs=None):
        return "/usr/bin/%s" % name if name in bins else None

    clock = FakeClock(start=1000.0)
    args = dict(case["input"], _ansible_check_mode=check_mode, _ansible_diff=case.get("diff", True))
    importd = case.get("importd", True)
    importd_curl = case.get("importd_curl", importd)  # libcurl is found (systemd >= 258 loads it at run time)
    with mock.patch.object(basic.AnsibleModule, "run_command", fake_run_command), \
            mock.patch.object(basic.AnsibleModule, "exit_json", fake_exit_json), \
            mock.patch.object(basic.AnsibleModule, "fail_json", fake_fail_json), \
            mock.patch.object(basic.AnsibleModule, "warn", lambda self, warning, **kw: warnings.append(warning)), \
            mock.patch.object(basic.AnsibleModule, "get_bin_path", fake_get_bin_path), \
            mock.patch.object(_machinectl.Machinectl, "importd_available", staticmethod(lambda: importd)), \
            mock.patch.object(_machinectl.Machinectl, "importd_can_download",
                              lambda self: self.version < _machinectl.LIBCURL_DLOPEN_VERSION or importd_curl), \
            mock.patch.object(_machinectl, "_monotonic", clock.monotonic), \
            mock.patch.object(_machinectl, "_sleep", clock.sleep), \
            mock.patch.object(_records, "ORIGIN_DIR", str(origin_dir)), \
            mock.patch.object(_records, "NIXPKGS_RECORD_DIR", str(tmp_path / "nixpkgs-records")), \
            mock.patch.object(_records, "PENDING_DIR", str(tmp_path / "pending")), \
            mock.patch.object(_records, "NIXOS_PENDING_DIR", str(tmp_path / "nixos-pending")), \
            mock.patch.object(_records, "NSPAWN_DIR", str(nspawn_dir)), \
            mock.patch.object(_lock, "LOCK_DIR", str(tmp_path) + "-locks"), \
            mock.patch.object(_image, "IMAGE_STORE", str(store)), \
            patch_module_args(args):
        result = None
        try:
            main()
        except Exit as exc:
            result = exc.result
        assert result is not None, "the module neither exited nor failed"
    assert len(calls) == len(script), (
        "%d of %d scripted commands were not run: %r" % (len(script) - len(calls), len(script), script[len(calls):]))
    return Outcome(result, result["failed"], calls, warnings, inputs)


def check_data(entry, data):
    """What a scripted command got on its stdin."""
    if "expect_data" in entry:
        assert data == entry["expect_data"], "stdin: expected %r, got %r" % (entry["expect_data"], data)
    for fragment in entry.get("data_contains", []):
        assert data is not None and fragment in data, "%r not in stdin %r" % (fragment, data)
    for fragment in entry.get("data_lacks", []):
        assert data is None or fragment not in data, "%r unexpectedly in stdin" % (fragment,)


def execute(args, data, how):
    """Run a scripted command for real on this machine (a parser that needs no privileges)."""
    if how == "inside":  # systemd-run -M NAME --wait --pipe --collect -q [-p PROP]... COMMAND...
        args = list(args[7:])
        while args and args[0] == "-p":
            args = args[2:]
    program = shutil.which(os.path.basename(args[0]))
    assert program, "%s is not installed here" % args[0]
    done = subprocess.run([program] + list(args[1:]), input=data, capture_output=True, text=True, check=False,
                          env=dict(os.environ, LANG="C", LC_ALL="C"))
    return done.returncode, done.stdout, done.stderr


def materialize(case, tmp_path):
    """Write a case's files and symlinks now (placeholders filled in); returns the case without them.

    Lets a test take a snapshot of the files before the module runs, or run a module twice on the same files.
    {root} is the tree of the machine nixos in the image store.
    """
    store = tmp_path / "machines"
    store.mkdir(exist_ok=True)
    mapping = dict(case.get("_mapping", {}), tmp=str(tmp_path), store=str(store), origin=str(tmp_path / "origin"),
                   nspawn=str(tmp_path / "nspawn"), root=str(store / "nixos"))
    case = substitute(copy.deepcopy(case), mapping)
    for path, content in (case.get("files") or {}).items():
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w", newline="") as handle:
            handle.write(content)
    for path, target in (case.get("symlinks") or {}).items():
        os.makedirs(os.path.dirname(path), exist_ok=True)
        os.symlink(target, path)
    return dict(case, files={}, symlinks={})


def check_files(case, tmp_path):
    """expect_files: {path: text, or null for "does not exist"}; expect_modes: {path: octal string}."""
    mapping = dict(case.get("_mapping", {}), tmp=str(tmp_path), store=str(tmp_path / "machines"),
                   origin=str(tmp_path / "origin"), nspawn=str(tmp_path / "nspawn"))
    expected = substitute(case.get("expect_files") or {}, mapping)
    for path, text in expected.items():
        if text is None:
            assert not os.path.lexists(path), "%s should not exist" % path
        else:
            assert os.path.isfile(path) and not os.path.islink(path), "%s is not a file" % path
            with open(path, newline="") as handle:
                content = handle.read()
            assert content == text, "%s:\n--- expected\n%s\n--- got\n%s" % (path, text, content)
    for path, mode in substitute(case.get("expect_modes") or {}, mapping).items():
        assert oct(os.stat(path).st_mode & 0o7777) == oct(int(str(mode), 8)), "%s mode %o" % (path, os.stat(path).st_mode)


def tree_snapshot(path):
    """{relative path: (kind, content or link target, mode)} of everything under path."""
    snapshot = {}
    for directory, dirnames, filenames in os.walk(str(path)):
        for name in dirnames + filenames:
            full = os.path.join(directory, name)
            info = os.lstat(full)
            if os.path.islink(full):
                snapshot[os.path.relpath(full, str(path))] = ("link", os.readlink(full), None)
            elif os.path.isdir(full):
                snapshot[os.path.relpath(full, str(path))] = ("dir", None, info.st_mode)
            elif not os.path.isfile(full):  # a FIFO would block a read
                snapshot[os.path.relpath(full, str(path))] = ("special", None, info.st_mode)
            else:
                with open(full, "rb") as handle:
                    snapshot[os.path.relpath(full, str(path))] = ("file", handle.read(), info.st_mode, info.st_ino, info.st_mtime_ns)
    return snapshot


def apply_effect(effect, args):
    """Side effects of a scripted command on the (temporary) filesystem, e.g. an export writing its file.

    A dict effect is {"symlink": {path: target}, "write": {path: text}, "remove": [path]}: (re)points symlinks,
    writes files, removes entries (a symlink itself, not its target).
    """
    if isinstance(effect, dict):
        for path in effect.get("remove") or []:
            os.unlink(path)
        for path, target in (effect.get("symlink") or {}).items():
            if os.path.lexists(path):
                os.unlink(path)
            os.makedirs(os.path.dirname(path), exist_ok=True)
            os.symlink(target, path)
        for path, text in (effect.get("write") or {}).items():
            with open(path, "w") as handle:
                handle.write(text)
    elif effect == "write_last_arg":
        with open(args[-1], "w") as handle:
            handle.write("exported\n")
    elif effect == "untar":  # tar -xpf FILE -C DIR
        with tarfile.open(args[args.index("-xpf") + 1]) as tar:
            if hasattr(tarfile, "data_filter"):
                tar.extractall(args[args.index("-C") + 1], filter="data")
            else:  # pragma: no cover - Python < 3.11.4
                tar.extractall(args[args.index("-C") + 1])
    elif effect == "fail_if_file_missing":
        assert os.path.isfile(args[-2])


def core_version():
    """The running ansible-core's (major, minor)."""
    return tuple(int(part) for part in ansible_release.__version__.split(".")[:2])


def refused_by_core(case):
    """True when the running ansible-core refuses the case's input before the module (msg_contains_since)."""
    return any(core_version() >= tuple(int(part) for part in version.split("."))
               for version in case.get("msg_contains_since") or {})


def msg_fragments(case):
    """msg_contains, or msg_contains_since {"2.20": [...]} for the newest ansible-core version reached.

    A case names the message of ansible-core itself where that refuses the input before the
    module does (e.g. from 2.20 on, a NUL in an argument fails AnsibleModule's syslog logging).
    """
    fragments = case.get("msg_contains", [])
    for version, since in sorted((case.get("msg_contains_since") or {}).items(),
                                 key=lambda item: tuple(int(part) for part in item[0].split("."))):
        if core_version() >= tuple(int(part) for part in version.split(".")):
            fragments = since
    return fragments


def check_expectations(case, outcome):
    expected = case.get("output", {})
    result = outcome.result
    if case.get("failed"):
        assert outcome.failed, "expected a failure, got %r" % result
        if "msg_startswith" in case:
            assert result["msg"].startswith(case["msg_startswith"]), "%r does not start with %r" % (
                result["msg"], case["msg_startswith"])
        for fragment in msg_fragments(case):
            assert fragment in result["msg"], "%r not in %r" % (fragment, result["msg"])
    else:
        assert not outcome.failed, "unexpected failure: %s" % result.get("msg")
    for key, value in expected.items():
        assert result.get(key) == value, "%s: expected %r, got %r" % (key, value, result.get(key))
    for fragment in case.get("warnings_contain", []):
        assert any(fragment in warning for warning in outcome.warnings), "%r not in warnings %r" % (fragment, outcome.warnings)
    if case.get("no_warnings"):
        assert not outcome.warnings, outcome.warnings
    for key in case.get("result_has", []):
        assert key in result, "%s missing from %r" % (key, result)
    for key in case.get("result_lacks", []):
        assert key not in result, "%s unexpectedly in %r" % (key, result)


def check_mode_commands(case):
    """What a check-mode run executes: the real run's commands up to the first one that changes something."""
    if "check_mode_commands" in case:
        return case["check_mode_commands"]
    commands = []
    for entry in expand_commands(case.get("run_command")):
        if is_mutating(entry["command"]):
            break
        commands.append(entry)
    return commands
