# -*- coding: utf-8 -*-
# Copyright (c) nspawn.nixos contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""The role's probe (roles/sidecar/vars/main.yml, _sidecar_probe_script) and the filters that read it.

The script itself runs here, with sh, on a tree of files made in tmp_path in place of the host's directories (its
arguments name them), so that what the filters parse is what the script prints. The facts part reads this machine's
own /etc/os-release, uname and /proc; the os-release files of the supported distributions are quoted below from the
distributions' own base-files / *-release packages. The lab's molecule and integration runs cover real hosts.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess

import pytest
import yaml

from ansible.errors import AnsibleFilterError

from ansible_collections.nspawn.nixos.plugins.filter.sidecar_host import sidecar_current, sidecar_host
from ansible_collections.nspawn.nixos.plugins.module_utils._systemd import _records
from ansible_collections.nspawn.nixos.plugins.module_utils._systemd._nspawn_ini import desired_values, edit

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", "..", ".."))
ROLE_VARS = yaml.safe_load(open(os.path.join(ROOT, "roles", "sidecar", "vars", "main.yml")))
SCRIPT = ROLE_VARS["_sidecar_probe_script"]
URL = "https://example.org/nixos-system-x86_64-linux.tar.xz"
HEX = "ab" * 32
WANTED = {"Network": {"VirtualEthernet": False, "Port": []}, "Files": {"Bind": ["/srv:/srv"], "BindReadOnly": []}}


@pytest.fixture
def tree(tmp_path):
    dirs = {name: tmp_path / name for name in ("machines", "origin", "pending", "nspawn")}
    for path in dirs.values():
        path.mkdir()
    return dirs


def probe(tree, name="nixos"):
    argv = ["sh", "-c", SCRIPT, "sh", name] + [str(tree[key]) for key in ("machines", "origin", "pending", "nspawn")]
    done = subprocess.run(argv + ["/etc/nixos/ansible.nix"], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    return done.stdout


def settled(tree, **kwargs):
    args = dict(url=URL, checksum=None, method="auto", settings=WANTED, purge=True)
    args.update(kwargs)
    return sidecar_current(sidecar_host(probe(tree)), **args)


def current_host(tree, origin=None, settings=None):
    """A host with the image, its origin record as nspawn_image writes it, and the settings file nspawn_settings wrote."""
    (tree["machines"] / "nixos" / "etc" / "nixos").mkdir(parents=True)
    record = origin or dict(name="nixos", url=URL, checksum=None, sha256=None, method="pull", verify="no")
    (tree["origin"] / "nixos.json").write_text(json.dumps(record))
    text = settings if settings is not None else edit(None, desired_values(WANTED, 257), True)[0]
    (tree["nspawn"] / "nixos.nspawn").write_text(text)


def test_the_role_names_the_modules_directories():
    assert ROLE_VARS["_sidecar_origin_dir"] == _records.ORIGIN_DIR
    assert ROLE_VARS["_sidecar_pending_dir"] == _records.PENDING_DIR
    assert ROLE_VARS["_sidecar_settings_dir"] == _records.NSPAWN_DIR


def test_facts_of_this_machine(tree):
    host = sidecar_host(probe(tree))
    assert host["architecture"] == os.uname().machine
    assert host["os_release"]["ID"]  # this machine's /etc/os-release
    with open("/proc/1/comm") as handle:
        pid1 = handle.read().strip()
    assert host["service_mgr"] == ("systemd" if os.path.isdir("/run/systemd/system") else pid1)
    assert host["machinectl"] == os.access("/usr/bin/machinectl", os.X_OK)
    assert (host["image"], host["pending"], host["nixos_module"], host["origin"], host["settings"]) == (False, False, False, None, None)


def test_crlf_and_a_banner_before_the_first_section():
    out = "Welcome!\r\n@@nspawn-nixos os-release@@\r\nID=fedora\r\n@@nspawn-nixos systemd@@\r\nsystemd 257 (257.9-2.fc42)\r\n" \
          "@@nspawn-nixos booted@@\r\nyes\r\n@@nspawn-nixos selinux@@\r\n1\r\n"
    host = sidecar_host(out)
    assert (host["os_family"], host["systemd_version"], host["service_mgr"], host["selinux"]) == ("RedHat", 257, "systemd", "enforcing")


# os-release files as the distributions ship them (Debian's base-files, Ubuntu's base-files, Fedora's fedora-release,
# Rocky's rocky-release), the lines that matter.
@pytest.mark.parametrize("text, family, name", [
    ('PRETTY_NAME="Debian GNU/Linux 13 (trixie)"\nNAME="Debian GNU/Linux"\nID=debian\n', "Debian", "Debian GNU/Linux"),
    ('NAME="Ubuntu"\nVERSION="24.04.1 LTS (Noble Numbat)"\nID=ubuntu\nID_LIKE=debian\n', "Debian", "Ubuntu"),
    ('NAME="Fedora Linux"\nVERSION="42 (Server Edition)"\nID=fedora\n', "RedHat", "Fedora Linux"),
    ('NAME="Rocky Linux"\nVERSION="9.5 (Blue Onyx)"\nID="rocky"\nID_LIKE="rhel centos fedora"\n', "RedHat", "Rocky Linux"),
    ('NAME="AlmaLinux"\nID="almalinux"\nID_LIKE="rhel centos fedora"\n', "RedHat", "AlmaLinux"),
    ('NAME="Linux Mint"\nID=linuxmint\nID_LIKE="ubuntu debian"\n', "Debian", "Linux Mint"),
    ('NAME="Arch Linux"\nID=arch\n', "arch", "Arch Linux"),
    ('NAME="openSUSE Tumbleweed"\nID="opensuse-tumbleweed"\nID_LIKE="opensuse suse"\n', "opensuse-tumbleweed", "openSUSE Tumbleweed"),
])
def test_os_family_from_id_and_id_like(text, family, name):
    host = sidecar_host("@@nspawn-nixos os-release@@\n" + text)
    assert (host["os_family"], host["distribution"]) == (family, name)


def test_os_release_quoting():
    host = sidecar_host('@@nspawn-nixos os-release@@\nNAME="A \\"quoted\\" \\$name"\nVERSION=\'1 (x)\'\n# comment\nID=a\n')
    assert host["os_release"] == {"NAME": 'A "quoted" $name', "VERSION": "1 (x)", "ID": "a"}


def test_not_the_probe():
    with pytest.raises(AnsibleFilterError, match="not the output of the sidecar role's probe"):
        sidecar_host("sh: 1: syntax error")
    with pytest.raises(AnsibleFilterError, match="expects the probe's output"):
        sidecar_host(None)
    with pytest.raises(AnsibleFilterError, match="expects the result of nspawn.nixos.sidecar_host"):
        sidecar_current("x")


def test_files_are_read_exactly(tree):
    text = "# kept\r\n[Network]\nVirtualEthernet=no\n\n[Files]\nBind=/a:/b \\\n"
    current_host(tree, settings=text)
    host = sidecar_host(probe(tree))
    assert host["settings"] == text
    assert host["image"] and host["origin"]["url"] == URL and not host["pending"]


def test_a_current_host_is_settled(tree):
    current_host(tree)
    if not os.access("/usr/bin/machinectl", os.X_OK):
        host = sidecar_host(probe(tree))
        assert sidecar_current(host, url=URL, settings=WANTED, purge=True)["image"] is False
        host["machinectl"] = True  # the image step needs machinectl; the settings step needs the systemd version
        host["systemd_version"] = host["systemd_version"] or 257
        assert sidecar_current(host, url=URL, settings=WANTED, purge=True) == {"image": True, "settings": True, "image_absent": False}
    else:
        assert settled(tree) == {"image": True, "settings": True, "image_absent": False}


def test_image_absent(tree):
    assert _settled_with_tools(tree)["image_absent"] is True  # nothing there: the image step fetches
    (tree["pending"] / "nixos.json").write_text("{}")
    assert _settled_with_tools(tree)["image_absent"] is False  # a pending transfer: the module recovers it first
    (tree["pending"] / "nixos.json").unlink()
    (tree["machines"] / "nixos.raw").write_text("")
    assert _settled_with_tools(tree)["image_absent"] is False


def _settled_with_tools(tree, **kwargs):
    host = sidecar_host(probe(tree))
    host["machinectl"], host["systemd_version"] = True, host["systemd_version"] or 257
    args = dict(url=URL, checksum=None, method="auto", settings=WANTED, purge=True)
    args.update(kwargs)
    return sidecar_current(host, **args)


@pytest.mark.parametrize("change, step", [
    (lambda tree: (tree["pending"] / "nixos.json").write_text("{}"), "image"),  # an interrupted transfer: recovery
    (lambda tree: (tree["origin"] / "nixos.json").unlink(), "image"),  # no origin record: the module warns
    (lambda tree: (tree["origin"] / "nixos.json").write_text("not json"), "image"),
    (lambda tree: (tree["origin"] / "nixos.json").write_text(json.dumps(dict(url=URL + "x"))), "image"),  # drift
    (lambda tree: os.rename(str(tree["machines"] / "nixos"), str(tree["machines"] / "other")), "image"),
    (lambda tree: (tree["nspawn"] / "nixos.nspawn").write_text("[Network]\nVirtualEthernet=yes\n"), "settings"),
    (lambda tree: (tree["nspawn"] / "nixos.nspawn").unlink(), "settings"),
    (lambda tree: (tree["nspawn"] / "nixos.nspawn").write_text(
        (tree["nspawn"] / "nixos.nspawn").read_text() + "[Exec]\nBoot=yes\n"), "settings"),  # purged by the module
    (lambda tree: (tree["nspawn"] / "nixos.nspawn").write_text(
        (tree["nspawn"] / "nixos.nspawn").read_text() + "broken line\n"), "settings"),  # the module warns about it
])
def test_what_the_modules_would_change_is_not_settled(tree, change, step):
    current_host(tree)
    change(tree)
    result = _settled_with_tools(tree)
    assert result[step] is False
    assert result["image" if step == "settings" else "settings"] is True


def test_a_symlinked_settings_file_is_left_to_the_module(tree):
    current_host(tree)
    os.rename(str(tree["nspawn"] / "nixos.nspawn"), str(tree["nspawn"] / "real"))
    os.symlink("real", str(tree["nspawn"] / "nixos.nspawn"))
    assert sidecar_host(probe(tree))["settings"] is None
    assert _settled_with_tools(tree)["settings"] is False


def test_checksums(tree):
    current_host(tree, origin=dict(url=URL, sha256=HEX))
    assert _settled_with_tools(tree, checksum="sha256:" + HEX)["image"] is True
    assert _settled_with_tools(tree, checksum="sha256:" + "cd" * 32)["image"] is False  # another pin: drift
    assert _settled_with_tools(tree, checksum="sha256:https://example.org/SHA256SUMS")["image"] is True  # no pin to compare
    assert _settled_with_tools(tree, checksum="sha256:" + HEX, method="pull")["image"] is False  # the module refuses it
    assert _settled_with_tools(tree, checksum="md5:1")["image"] is False  # the module refuses it


def test_a_token_in_the_url_is_compared_redacted(tree):
    # nspawn_image records the URL with the password hidden (redact_url), and compares the request the same way.
    current_host(tree, origin=dict(url="https://********@example.org/i.tar.xz"))
    assert _settled_with_tools(tree, url="https://user:secret@example.org/i.tar.xz")["image"] is True


def test_bad_settings_are_left_to_the_module(tree):
    current_host(tree)
    assert _settled_with_tools(tree, settings={"Nope": {}})["settings"] is False
    assert _settled_with_tools(tree, settings=None)["settings"] is False


def test_an_invalid_name_reads_no_file(tree):
    current_host(tree)
    host = sidecar_host(probe(tree, name=""))
    assert host["os_release"] and (host["image"], host["origin"], host["settings"]) == (False, None, None)


def test_base64_that_does_not_decode_is_no_file():
    out = "@@nspawn-nixos os-release@@\nID=debian\n@@nspawn-nixos settings@@\nfile\n!\n@@nspawn-nixos origin@@\nfile\n" \
          + base64.b64encode(b"[1]").decode() + "\n"
    host = sidecar_host(out)
    assert host["settings"] is None and host["origin"] is None  # not base64; not a JSON object
