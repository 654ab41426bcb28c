# -*- coding: utf-8 -*-
# Copyright (c) nspawn.nixos contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""systemd .nspawn files for the nspawn_settings module: parse, edit, render, validate.

``NspawnFile(text).render()`` gives back ``text`` byte for byte: every comment, blank
line, odd spacing, line ending and continuation line is kept, and an edit rewrites only
the lines of the keys it touches. The file is read the way systemd's config_parse()
reads it (systemd.syntax(7)):

* lines end at LF, CRLF or a lone CR; ``#`` or ``;`` after optional blanks starts a comment
  (only at the start of a line: ``Key=a # b`` has the value ``a # b``);
* a line ending in an odd number of backslashes continues on the next line (the backslash
  reads as a space); comment lines inside a continuation are skipped;
* key and value are stripped of blanks around ``=``; repeated keys are kept in order.

Every setting is read only when systemd-nspawn starts, so any change of the effective
settings of a running machine needs ``machinectl reboot`` (systemd-nspawn@.service
restarts systemd-nspawn on the container's reboot, which reads the file again).

Private module: not a public API.
"""

from __future__ import annotations

import re
from collections import namedtuple

BLANKS = " \t\n\r"
SECTIONS = ("Exec", "Files", "Network")
_LINE_RE = re.compile(r"[^\r\n]*(?:\r\n|\n|\r)?")
_NAME_RE = re.compile(r"^[A-Za-z][A-Za-z0-9]*$")

KeySpec = namedtuple("KeySpec", "since multi words replaced_by")
"""since: first systemd version whose nspawn parser knows the key; multi: repeated lines add up
(Bind=, Port=, ...) instead of the last one winning; words: one value may itself hold several
whitespace-separated items (Capability=CAP_A CAP_B); replaced_by: the newer name of an old key."""


# From the parser tables (src/nspawn/nspawn-gperf.gperf) of every release v226..v256 and a
# current main snapshot (the same keys as v256, so also 257), cross-checked with the
# "Added in version" notes of systemd.nspawn(5); the man page is later only for KillSignal=
# (230; the parser has it since 226). The keys of 258..262 are those systemd-nspawn 262
# (Debian sid, the lab's debian-sid host) parses beyond 257's, with the versions its
# systemd.nspawn(5) gives: BindUserShell= 258, NamespacePath= 259, PrivateUsersDelegate= 260,
# RestrictAddressFamilies= 261 ("the same list parameter" as --restrict-address-families=). "*" marks keys whose repeated lines add up (Bind=,
# Port=, ...; for the others a later line overrides an earlier one), "+" keys whose value
# is split at whitespace into several items (their parsers loop over extract_first_word()).
_TABLE = """
Exec 226 Boot Parameters*+ Environment*+ User Capability*+ DropCapability*+ KillSignal Personality MachineID
Exec 229 ProcessTwo WorkingDirectory
Exec 230 PrivateUsers
Exec 231 NotifyReady
Exec 233 PivotRoot
Exec 235 SystemCallFilter*+
Exec 239 NoNewPrivileges OOMScoreAdjust CPUAffinity*+ Hostname ResolvConf Timezone LinkJournal
Exec 239 LimitCPU LimitFSIZE LimitDATA LimitSTACK LimitCORE LimitRSS LimitNOFILE LimitAS LimitNPROC
Exec 239 LimitMEMLOCK LimitLOCKS LimitSIGPENDING LimitMSGQUEUE LimitNICE LimitRTPRIO LimitRTTIME
Exec 240 Ephemeral
Exec 248 AmbientCapability*+
Exec 250 SuppressSync
Exec 260 PrivateUsersDelegate
Exec 261 RestrictAddressFamilies*+
Files 226 ReadOnly Volatile Bind* BindReadOnly* TemporaryFileSystem*
Files 230 PrivateUsersChown
Files 233 Overlay* OverlayReadOnly*
Files 242 Inaccessible*
Files 249 BindUser*+ PrivateUsersOwnership
Files 258 BindUserShell
Network 226 Private VirtualEthernet Interface*+ MACVLAN*+ IPVLAN*+ Bridge Port*
Network 228 VirtualEthernetExtra*
Network 230 Zone
Network 259 NamespacePath
"""
# Old names the parser still accepts.
_REPLACED = {("Files", "PrivateUsersChown"): "PrivateUsersOwnership"}


def _load_table(table):
    keys: dict = dict((section, {}) for section in SECTIONS)
    for row in table.split("\n"):
        if row.strip():
            section, since, names = row.split(None, 2)
            for name in names.split():
                key = name.rstrip("*+")
                keys[section][key] = KeySpec(int(since), "*" in name, "+" in name, _REPLACED.get((section, key)))
    return keys


KEYS = _load_table(_TABLE)


class NspawnSettingsError(ValueError):
    """A section, key or value that cannot go into a .nspawn file; the message names it."""


class _Entry:
    """One logical line: its exact text (physical lines with their endings) and what it means."""

    __slots__ = ("kind", "raw", "section", "key", "value")

    def __init__(self, kind, raw, section=None, key=None, value=None):
        self.kind, self.raw, self.section, self.key, self.value = kind, raw, section, key, value

    def is_key(self, section, key=None):
        return self.kind == "assignment" and self.section == section and (key is None or self.key == key)


def _continues(logical):
    """systemd's rule: an unescaped backslash at the end (an odd run of them) continues the line."""
    run = len(logical) - len(logical.rstrip("\\"))
    return run % 2 == 1


def _classify(raw, logical, section):
    line = logical.strip(BLANKS)
    if not line:
        return _Entry("blank", raw, section)
    if line.startswith("["):
        if line.endswith("]") and len(line) > 1:
            return _Entry("section", raw, line[1:-1])
        return _Entry("invalid", raw, section)
    key, equals, value = line.partition("=")
    if not equals or not key.strip(BLANKS):
        return _Entry("invalid", raw, section)
    return _Entry("assignment", raw, section, key.strip(BLANKS), value.strip(BLANKS))


def _parse(text):
    entries, section, pending = [], None, None
    pos = 0
    while pos < len(text):
        raw = _LINE_RE.match(text, pos).group(0)  # type: ignore[union-attr]  # the pattern matches anywhere
        pos += len(raw)
        body = raw.rstrip("\r\n")
        if body.lstrip(BLANKS)[:1] in ("#", ";"):
            if pending:
                pending[0] += raw  # systemd skips comment lines inside a continuation
            else:
                entries.append(_Entry("comment", raw, section))
            continue
        if pos == len(raw) and body.startswith(u"\ufeff"):
            body = body[1:]  # systemd skips a byte order mark, after its comment check
        raw_all, logical = (pending[0] + raw, pending[1] + body) if pending else (raw, body)
        if _continues(logical):
            pending = [raw_all, f"{logical[:-1]} "]
            continue
        pending = None
        entry = _classify(raw_all, logical, section)
        section = entry.section
        entries.append(entry)
    if pending:
        entries.append(_classify(pending[0], pending[1], section))
    return entries


def check_value(value, where):
    """Rejects what cannot be written as one line that systemd reads back as exactly ``value``."""
    for char, label in (("\n", "a newline"), ("\r", "a carriage return"), ("\0", "a NUL character")):
        if char in value:
            raise NspawnSettingsError(f"{where}: value {value!r} contains {label}")
    if value != value.strip(" \t"):
        raise NspawnSettingsError(f"{where}: value {value!r} has leading or trailing blanks, which systemd strips")
    if _continues(value):
        raise NspawnSettingsError(f"{where}: value {value!r} ends with a backslash, which systemd reads as a line continuation")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise NspawnSettingsError(f"{where}: value {value!r} is not valid UTF-8 text")
    return value


def to_values(value, section, key):
    """Ansible data to the list of values of one key: bool -> yes/no, int -> str, list -> repeated key.

    None and [] mean "no lines for this key". Floats, dicts and nested lists are refused.
    """
    where = f"[{section}] {key}="
    items = value if isinstance(value, (list, tuple)) else ([] if value is None else [value])
    values = []
    for item in items:
        if isinstance(item, bool):
            values.append("yes" if item else "no")
        elif isinstance(item, int):
            values.append(str(item))
        elif isinstance(item, str):
            values.append(check_value(item, where))
        else:
            raise NspawnSettingsError(f"{where}: {item!r} is a {type(item).__name__}; use a string, an integer, a boolean or a list of them")
    return values


def _host(systemd_version):
    return "" if systemd_version is None else f" (this host runs systemd {systemd_version})"


def _major(systemd_version):
    """252 from 252, "252" or "252.19-1~deb12u1"."""
    match = re.match(r"\s*(\d+)", str(systemd_version))
    if not match:
        raise NspawnSettingsError(f"cannot read a systemd version from {systemd_version!r}")
    return int(match.group(1))


def check_key(section, key, systemd_version=None):
    """The KeySpec of ``[section] key=``; raises when systemd.nspawn(5) of that version has no such key."""
    if section not in KEYS:
        raise NspawnSettingsError("[%s] is not a section of .nspawn files; systemd.nspawn(5) has [Exec], [Files] and [Network]%s"
                                  % (section, _host(systemd_version)))
    spec = KEYS[section].get(key)
    if spec is None:
        elsewhere = [name for name in SECTIONS if key in KEYS[name]]
        hint = f"; {key}= belongs in [{elsewhere[0]}]" if elsewhere else ""
        raise NspawnSettingsError(f"[{section}] {key}= is not a setting of systemd.nspawn(5){hint}{_host(systemd_version)}")
    if systemd_version is not None and _major(systemd_version) < spec.since:
        raise NspawnSettingsError("[%s] %s= needs systemd %d or later; this host runs systemd %s"
                                  % (section, key, spec.since, systemd_version))
    return spec


# Values systemd-nspawn refuses when the machine starts (it then does not start): checked here instead.
_PORT_RE = re.compile(r"^(?:(?:tcp|udp):)?(\d{1,5})(?::(\d{1,5}))?$")


def _check_port(value):
    """Port= (systemd.nspawn(5), --port=): [tcp:|udp:]HOSTPORT[:CONTAINERPORT], ports 1-65535."""
    match = _PORT_RE.match(value)
    if not match or not all(1 <= int(port) <= 65535 for port in match.groups() if port is not None):
        raise NspawnSettingsError(f"[Network] Port={value}: expected [tcp:|udp:]HOSTPORT[:CONTAINERPORT] with ports 1-65535, e.g. tcp:8080:80")


# Bind mount options systemd-nspawn knows (src/nspawn/nspawn-mount.c, parse_mount_bind_options); it refuses
# any other word ("Invalid bind mount option") and the machine does not start.
BIND_OPTIONS = ("rbind", "norbind", "idmap", "noidmap", "rootidmap", "owneridmap")
# The first systemd whose nspawn knows a bind option (the others are older than any supported
# systemd). Read from the lab hosts' systemd-nspawn binaries: none of the idmap options in 247;
# idmap, noidmap, rootidmap in 252 and 254; owneridmap in 257. Within those bounds: idmap and
# noidmap came with 250 (systemd PR 19828), rootidmap with 252 (PR 24467), owneridmap with 256
# (PR 30080, opened after 255's feature freeze).
BIND_OPTION_SINCE = {"idmap": 250, "noidmap": 250, "rootidmap": 252, "owneridmap": 256}


def _source(path, where):
    """A source path of Bind=/Overlay= (nspawn-mount.c, source_path_parse): absolute on the host, or "+/PATH"
    relative to the machine's root. A relative path would be made absolute against systemd-nspawn's working
    directory (/ for machinectl's systemd-nspawn@.service): refused, it is almost never what was meant."""
    if path.startswith("+"):
        if not path[1:].startswith("/"):
            raise NspawnSettingsError("%s: source %r: after \"+\" (relative to the machine's root) an absolute path must "
                                      "follow, e.g. +/var/lib/data" % (where, path))
    elif not path.startswith("/"):
        raise NspawnSettingsError("%s: source %r is not an absolute path; give the host's path from / (systemd would "
                                  "resolve %r against /), or +/PATH for a path in the machine's root" % (where, path, path))


def _destination(path, where, what="destination"):
    if not path.startswith("/"):
        raise NspawnSettingsError(f"{where}: {what} {path!r} is not an absolute path in the machine")


def _check_bind(value, key):
    """Bind=, BindReadOnly= (systemd.nspawn(5), --bind=): SOURCE[:DESTINATION[:OPTIONS]], OPTIONS a comma list
    of BIND_OPTIONS; an empty SOURCE is a temporary directory (then a DESTINATION is needed)."""
    where = f"[Files] {key}={value}"
    parts = value.split(":", 2)
    source = parts[0]
    if source:
        _source(source, where)
    elif len(parts) == 1:
        raise NspawnSettingsError(f"{where}: empty; give SOURCE[:DESTINATION[:OPTIONS]]")
    destination = parts[1] if len(parts) > 1 else source.lstrip("+")
    _destination(destination, where)
    if len(parts) == 3:
        unknown = [word for word in parts[2].split(",") if word and word not in BIND_OPTIONS]
        if unknown:
            raise NspawnSettingsError("%s: unknown bind option %s; systemd-nspawn knows %s" % (
                where, ", ".join(repr(word) for word in unknown), ", ".join(BIND_OPTIONS)))


def _check_absolute_first(value, key, section="Files"):
    """TemporaryFileSystem= (PATH[:OPTIONS]), Inaccessible=, WorkingDirectory=: an absolute path in the machine."""
    _destination(value.split(":", 1)[0] if key == "TemporaryFileSystem" else value, f"[{section}] {key}={value}", "path")


def _check_overlay(value, key):
    """Overlay=, OverlayReadOnly= (--overlay=): LOWER...:UPPER[:DESTINATION], at least two paths; sources absolute
    or +/PATH; with three or more the last is the absolute destination (nspawn-mount.c, overlay_mount_parse)."""
    where = f"[Files] {key}={value}"
    parts = value.split(":")
    if len(parts) < 2:
        raise NspawnSettingsError(f"{where}: give at least LOWER:UPPER (paths separated by colons)")
    sources = parts if len(parts) == 2 else parts[:-1]
    for index, path in enumerate(sources):
        if path or len(parts) == 2 or index != len(sources) - 1:  # an empty UPPER (of three or more) is a temporary one
            _source(path, where)
    if len(parts) > 2:
        _destination(parts[-1], where)


VALUE_CHECKS = {
    ("Network", "Port"): _check_port,
    ("Files", "Bind"): lambda value: _check_bind(value, "Bind"),
    ("Files", "BindReadOnly"): lambda value: _check_bind(value, "BindReadOnly"),
    ("Files", "TemporaryFileSystem"): lambda value: _check_absolute_first(value, "TemporaryFileSystem"),
    ("Files", "Inaccessible"): lambda value: _check_absolute_first(value, "Inaccessible"),
    ("Files", "Overlay"): lambda value: _check_overlay(value, "Overlay"),
    ("Files", "OverlayReadOnly"): lambda value: _check_overlay(value, "OverlayReadOnly"),
    ("Exec", "WorkingDirectory"): lambda value: _check_absolute_first(value, "WorkingDirectory", "Exec"),
}


def check_setting(section, key, values, systemd_version=None):
    """check_key(), a single value for keys where a later line would override an earlier one, and
    the syntax of the values of VALUE_CHECKS' keys."""
    spec = check_key(section, key, systemd_version)
    if len(values) > 1 and not spec.multi:
        raise NspawnSettingsError(f"[{section}] {key}= takes one value, got {len(values)}: {values!r} (systemd would use only the last)")
    for value in values:
        if (section, key) in VALUE_CHECKS:
            VALUE_CHECKS[(section, key)](value)
        if (section, key) in (("Files", "Bind"), ("Files", "BindReadOnly")) and systemd_version is not None:
            _check_bind_options_version(value, key, systemd_version)
    return spec


def _check_bind_options_version(value, key, systemd_version):
    """A bind option the host's systemd-nspawn does not know makes the machine fail to start: refuse it."""
    parts = value.split(":", 2)
    if len(parts) < 3:
        return
    for word in parts[2].split(","):
        since = BIND_OPTION_SINCE.get(word)
        if since and _major(systemd_version) < since:
            raise NspawnSettingsError("[Files] %s=%s: the bind option %s needs systemd %d or later; this host runs systemd %s"
                                      % (key, value, word, since, systemd_version))


class NspawnFile:
    """A parsed .nspawn file; ``render()`` of an unedited file is the text it was parsed from."""

    def __init__(self, text=""):
        self.entries = _parse(text)
        self.newline = "\r\n" if "\r\n" in text else "\n"

    def render(self):
        return "".join(entry.raw for entry in self.entries)

    def get(self, section, key):
        """The values of ``key`` in ``section`` (every [section] block), in file order."""
        return [entry.value for entry in self.entries if entry.is_key(section, key)]

    def invalid_lines(self):
        """[(line number, text)] of lines systemd ignores with a warning, or refuses ("[Broken")."""
        found, number = [], 1
        for entry in self.entries:
            if entry.kind == "invalid":
                found.append((number, entry.raw.rstrip("\r\n")))
            number += len(_LINE_RE.findall(entry.raw)) - 1
        return found

    def to_dict(self):
        """{section: {key: [values]}} of every assignment inside a section."""
        result: dict = {}
        for entry in self.entries:
            if entry.kind == "assignment" and entry.section is not None:
                result.setdefault(entry.section, {}).setdefault(entry.key, []).append(entry.value)
        return result

    def _line(self, kind, text, section=None, key=None, value=None):
        return _Entry(kind, text + self.newline, section, key, value)

    def _terminate(self, index):
        """Lets lines follow the entry at ``index``: a line ending, and a blank line after a
        continuation left open at the end of the file (it would swallow the next line)."""
        entry = self.entries[index]
        last = _LINE_RE.findall(entry.raw)[-2].rstrip("\r\n")
        if not entry.raw.endswith(("\n", "\r")):
            entry.raw += self.newline
        if _continues(last) and last.lstrip(BLANKS)[:1] not in ("#", ";"):
            entry.raw += self.newline

    def set(self, section, key, values):
        """Makes ``values`` (list of str) the lines of ``key``; returns True when the text changed.

        Existing lines of the key are replaced where the first one is (lines whose value stays
        are kept as written); a new key goes after the last line of the section's last block;
        a missing section is added at the end, after a blank line.
        """
        values = list(values)
        if not all(isinstance(name, str) and _NAME_RE.match(name) for name in (section, key)):
            raise NspawnSettingsError(f"[{section}] {key}=: section and key names are ASCII letters and digits")
        for value in values:
            check_value(value, f"[{section}] {key}=")
        current = [entry for entry in self.entries if entry.is_key(section, key)]
        if [entry.value for entry in current] == values:
            return False
        if not values:
            return self.remove(section, key)
        new = []
        for value in values:
            reuse = [entry for entry in current if entry.value == value and entry not in new]
            new.append(reuse[0] if reuse else self._line("assignment", f"{key}={value}", section, key, value))
        if current:
            at = self.entries.index(current[0])
            self.entries = [entry for entry in self.entries if entry not in current]
        else:
            at = self._section_end(section)
        self.entries[at:at] = new
        for index in range(max(at - 1, 0), at + len(new)):
            if index < len(self.entries) - 1:
                self._terminate(index)
        return True

    def _section_end(self, section):
        """Where a new key of ``section`` goes: after the last non-blank line of its last block."""
        headers = [i for i, entry in enumerate(self.entries) if entry.kind == "section" and entry.section == section]
        if not headers:
            if self.entries and self.entries[-1].kind != "blank":
                self._terminate(len(self.entries) - 1)
                self.entries.append(self._line("blank", ""))
            self.entries.append(self._line("section", f"[{section}]", section))
            return len(self.entries)
        at = headers[-1] + 1
        for index in range(at, len(self.entries)):
            if self.entries[index].kind == "section":
                break
            if self.entries[index].kind != "blank":
                at = index + 1
        return at

    def remove(self, section, key):
        """Removes every line of ``key`` in ``section``; returns True when there was one."""
        kept = [entry for entry in self.entries if not entry.is_key(section, key)]
        changed = len(kept) != len(self.entries)
        self.entries = kept
        return changed

    def purge(self, keep):
        """Removes every assignment whose key is not in ``keep`` ({section: keys}); True when any went.

        A section block left with nothing but blank lines loses its header too.
        """
        kept = [entry for entry in self.entries
                if entry.kind != "assignment" or entry.key in keep.get(entry.section, ())]
        if len(kept) == len(self.entries):
            return False
        block: list = []
        self.entries = []
        for entry in kept + [None]:
            if entry is None or entry.kind == "section":
                if not block or block[0].kind != "section" or any(e.kind not in ("section", "blank") for e in block):
                    self.entries.extend(block)
                block = []
            block.append(entry)
        return True


def restart_required(before_text, after_text):
    """True when the effective settings differ (comments and spacing do not count).

    systemd-nspawn reads the file only when the container starts: a running machine needs
    ``machinectl reboot`` for any such change to take effect.
    """
    return NspawnFile(before_text or "").to_dict() != NspawnFile(after_text or "").to_dict()


def desired_values(settings, systemd_version):
    """{section: {key: [str values]}} from nspawn_settings' settings option, every name and value checked.

    Raises NspawnSettingsError naming settings.SECTION.KEY for anything systemd-nspawn would not read
    back exactly, or does not know in this version.
    """
    if not isinstance(settings, dict):
        raise NspawnSettingsError(f"settings: must be a dict of sections ({', '.join(SECTIONS)})")
    desired: dict = {}
    for section, keys in settings.items():
        if section not in SECTIONS:
            raise NspawnSettingsError("settings.%s: [%s] is not a section of .nspawn files; systemd.nspawn(5) has %s"
                                      % (section, section, ", ".join("[%s]" % name for name in SECTIONS)))
        if keys is None:
            keys = {}
        if not isinstance(keys, dict):
            raise NspawnSettingsError(f"settings.{section}: must be a dict of key: value, got {type(keys).__name__}")
        desired[section] = {}
        for key, value in keys.items():
            try:
                values = to_values(value, section, key)
                check_setting(section, key, values, systemd_version)
            except NspawnSettingsError as exc:
                raise NspawnSettingsError(f"settings.{section}.{key}: {exc}")
            desired[section][key] = values
    return desired


def edit(before, desired, purge):
    """(text, warnings): the file ``before`` (None: no file) with ``desired`` (desired_values()) set, and with
    every other key removed when ``purge``; warnings for lines systemd would not read and for old key names.

    nspawn_settings writes the text; the sidecar role's probe (filter nspawn.nixos.sidecar_current) compares the
    file it read with it, so that both judge a file the same way.
    """
    nspawn = NspawnFile(before or "")
    warnings = ["line %d of the existing settings file is not valid and is kept as it is: %r" % (number, line)
                for number, line in nspawn.invalid_lines()]
    for section, keys in desired.items():
        for key, values in keys.items():
            spec = check_setting(section, key, values)
            if spec.replaced_by:
                warnings.append(f"settings.{section}.{key}: {key}= is the old name of {spec.replaced_by}=")
            nspawn.set(section, key, values)
    if purge:
        nspawn.purge(dict((section, [key for key, values in keys.items() if values]) for section, keys in desired.items()))
    return nspawn.render(), warnings
