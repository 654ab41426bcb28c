# -*- coding: utf-8 -*-
# Copyright (c) nspawn.nixos contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""The sidecar role's probe: one raw command reads what the role needs of a host, these filters read its output.

The probe (roles/sidecar/vars/main.yml, _sidecar_probe_script) replaces fact gathering and one Python module call per
step that has nothing to do: a POSIX shell script prints sections, each after a line ``@@nspawn-nixos NAME@@``.
sidecar_host() reads them into the few facts the role uses; sidecar_current() says which steps the probe settles,
judged with the modules' own functions (module_utils), so that the role skips a module only where that module would
find nothing to do. Anything the probe cannot settle (a pending transfer, an unreadable or odd file, a value the
module would refuse) is left to the module, which reads the host again under its lock.
"""

from __future__ import annotations

import base64
import binascii
import json
import re

from ansible.errors import AnsibleFilterError

from ansible_collections.nspawn.nixos.plugins.module_utils._systemd._os_release import parse_os_release
from ansible_collections.nspawn.nixos.plugins.module_utils._systemd._machinectl import parse_systemd_version
from ansible_collections.nspawn.nixos.plugins.module_utils._systemd._nspawn_ini import desired_values, edit
from ansible_collections.nspawn.nixos.plugins.module_utils._systemd._records import origin_drift, requested_origin
from ansible_collections.nspawn.nixos.plugins.module_utils._core._validate import parse_checksum

_SECTION_RE = re.compile(r"^@@nspawn-nixos ([a-z0-9-]+)@@$")

# os-release(5): ID, then ID_LIKE's words "in order of how closely the local distribution relates", name the
# distributions an OS is built on. The families the role supports, by those names.
OS_FAMILIES = (
    ("Debian", ("debian", "ubuntu")),
    ("RedHat", ("rhel", "fedora", "centos")),
)


def _sections(text):
    """{name: [lines]} of the probe's output; lines before the first section (a login banner) are not the probe's."""
    sections: dict = {}
    current = None
    for line in (text or "").splitlines():
        line = line.rstrip("\r")  # raw runs in a pseudo-terminal: CRLF line ends
        match = _SECTION_RE.match(line)
        if match:
            current = sections.setdefault(match.group(1), [])
        elif current is not None:
            current.append(line)
    return sections


def _os_family(os_release):
    names = [os_release.get("ID", "").lower()] + os_release.get("ID_LIKE", "").lower().split()
    for name in names:
        for family, members in OS_FAMILIES:
            if name in members:
                return family
    return names[0] or "unknown"


def _first(sections, name):
    lines = [line.strip() for line in sections.get(name, []) if line.strip()]
    return lines[0] if lines else ""


def _file(lines):
    """A file the probe printed as base64 (after a line 'file'), as text; None when missing, odd or unreadable."""
    if not lines or lines[0].strip() != "file":
        return None
    try:
        return base64.b64decode("".join("".join(lines[1:]).split()), validate=True).decode("utf-8", "surrogateescape")
    except (binascii.Error, ValueError):
        return None


def sidecar_host(stdout):
    """The probe's output as the host's facts and the sidecar's files on it (see the filter's documentation)."""
    if not isinstance(stdout, str):
        raise AnsibleFilterError(f"sidecar_host: expects the probe's output (a string), got {type(stdout).__name__}")
    sections = _sections(stdout)
    if "os-release" not in sections:
        raise AnsibleFilterError("sidecar_host: this is not the output of the sidecar role's probe (no section "
                                 "'@@nspawn-nixos os-release@@'): %r" % stdout[:200])
    os_release = parse_os_release("\n".join(sections.get("os-release", [])))
    try:
        systemd_version = parse_systemd_version(_first(sections, "systemd"))
    except ValueError:
        systemd_version = None
    enforce = _first(sections, "selinux")
    origin_text = _file(sections.get("origin"))
    try:
        origin = json.loads(origin_text) if origin_text is not None else None
    except ValueError:
        origin = None
    return dict(
        os_release=os_release,
        distribution=os_release.get("NAME") or os_release.get("ID") or "unknown",
        os_family=_os_family(os_release),
        architecture=_first(sections, "architecture") or "unknown",
        # sd_booted(3): the system runs systemd as its init when /run/systemd/system is a directory.
        service_mgr="systemd" if _first(sections, "booted") == "yes" else (_first(sections, "pid1") or "unknown"),
        systemd_version=systemd_version,
        # libselinux's security_getenforce() reads selinuxfs' enforce: 1 enforcing, 0 permissive; no selinuxfs, none.
        selinux={"1": "enforcing", "0": "permissive"}.get(enforce, "disabled"),
        machinectl=_first(sections, "machinectl") == "yes",
        image=_first(sections, "image") == "yes",
        pending=_first(sections, "pending") == "yes",
        nixos_module=_first(sections, "nixos-module") == "yes",
        origin=origin if isinstance(origin, dict) else None,
        settings=_file(sections.get("settings")),
    )


def _image_current(host, url, checksum, method):
    """nspawn_image would find nothing to do: the image is there, no transfer is pending, and its origin record
    matches the request (origin_drift(), as the module plans)."""
    if not (host.get("machinectl") and host.get("image") and not host.get("pending") and isinstance(host.get("origin"), dict) and url):
        return False
    parsed = parse_checksum(checksum or None)
    if parsed and method == "pull":
        return False  # the module refuses the combination, also for an image that is there: let it say so
    return origin_drift(host["origin"], requested_origin(url, parsed, checksum or None)) == {}


def _settings_current(host, settings, purge):
    """nspawn_settings would write nothing: edit() of the file the probe read gives the same text, without warnings."""
    before, version = host.get("settings"), host.get("systemd_version")
    if before is None or version is None or settings is None:
        return False
    after, warnings = edit(before, desired_values(settings, version), purge)
    return not warnings and after == before


def _image_absent(host):
    """nspawn_image has to fetch: machinectl is there, no image of that name in /var/lib/machines, no transfer pending
    (an image elsewhere, e.g. /etc/machines, the module finds itself and judges as usual)."""
    return bool(host.get("machinectl") and not host.get("image") and not host.get("pending"))


def sidecar_current(host, url=None, checksum=None, method="auto", settings=None, purge=False):
    """{'image': bool, 'settings': bool, 'image_absent': bool}: which steps the probe settles as having nothing to do,
    and whether the image step certainly has to fetch."""
    if not isinstance(host, dict):
        raise AnsibleFilterError(f"sidecar_current: expects the result of nspawn.nixos.sidecar_host, got {type(host).__name__}")
    result = {}
    for step, judge in (("image", lambda: _image_current(host, url, checksum, method)),
                        ("settings", lambda: _settings_current(host, settings, purge)),
                        ("image_absent", lambda: _image_absent(host))):
        try:
            result[step] = bool(judge())
        except Exception:  # pylint: disable=broad-except
            # A value the module would refuse or a file it would warn about: not settled here, the module says why.
            result[step] = False
    return result


class FilterModule:
    """nspawn.nixos.sidecar_host, nspawn.nixos.sidecar_current"""

    def filters(self):
        return {"sidecar_host": sidecar_host, "sidecar_current": sidecar_current}
