# -*- coding: utf-8 -*-
# Copyright (c) nspawn.nixos contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""_nspawn_ini: byte-identical round trips, edits that touch only their keys, systemd's key table."""

from __future__ import annotations

import os

import pytest
from hypothesis import given, settings, strategies as st

from ansible_collections.nspawn.nixos.plugins.module_utils._systemd._nspawn_ini import (
    KEYS, NspawnFile, NspawnSettingsError, SECTIONS, check_key, check_setting, check_value, restart_required, to_values,
)

FIXTURES = os.path.join(os.path.dirname(__file__), "fixtures", "nspawn")
RANDOM = os.environ.get("NSPAWN_NIXOS_RANDOM_TESTS") == "1"
PROPERTY = settings(deadline=None, derandomize=not RANDOM, database=None if not RANDOM else settings.default.database)


def examples(count):
    return settings(PROPERTY, max_examples=count)


def fixture(name):
    with open(os.path.join(FIXTURES, name), "rb") as handle:
        return handle.read().decode("utf-8")


FIXTURE_NAMES = sorted(os.listdir(FIXTURES))
EXPECTED = {
    "article.nspawn": {"Network": {"VirtualEthernet": ["no"]},
                       "Files": {"Bind": ["/home/user/shared:/root/shared"], "BindReadOnly": ["/etc/resolv.conf"]}},
    "commented.nspawn": {
        "Exec": {"Boot": ["yes"], "PrivateUsers": ["pick"], "Environment": ['LANG=C.UTF-8 "GREETING=hello world"'],
                 "Hostname": ["web"], "Capability": ["CAP_NET_ADMIN # not a comment: part of the value"]},
        "Files": {"Bind": ["/srv/src:/src", "/srv/data:/data:idmap", "/srv/cache:/var/cache"], "BindReadOnly": ["/etc/ssl/certs"]},
        "Network": {"VirtualEthernet": ["yes"], "Port": ["tcp:8080:80", "443"]}},
    "continuation.nspawn": {
        # The backslash reads as a space, the next line is appended as it is (systemd's config_parse).
        "Exec": {"Parameters": ["--log-level=debug    --log-target=console"], "SystemCallFilter": ["@system-service    ~@mount"],
                 "Environment": ["PATH=C:\\\\"], "Hostname": ["one\\\\ two"]},
        "Files": {"Bind": ["/a:/b", "/c:/d"]}},
    "empty.nspawn": {},
    "no-final-newline.nspawn": {"Network": {"Private": ["yes"], "Zone": ["lab"]}},
    "odd.nspawn": {"Exec": {"Boot": ["yes"], "KillSignal": ["SIGRTMIN+3"]}, "X-Custom": {"Anything": ["goes"]}},
}


def test_every_fixture_has_expectations():
    assert set(FIXTURE_NAMES) == set(EXPECTED)


@pytest.mark.parametrize("name", FIXTURE_NAMES)
def test_fixture_round_trip_and_meaning(name):
    text = fixture(name)
    parsed = NspawnFile(text)
    assert parsed.render() == text
    assert parsed.to_dict() == EXPECTED[name]


@pytest.mark.parametrize("name", FIXTURE_NAMES)
@pytest.mark.parametrize("newline", ["\r\n", "\r"])
def test_other_line_endings_round_trip(name, newline):
    text = fixture(name).replace("\n", newline)
    parsed = NspawnFile(text)
    assert parsed.render() == text
    assert parsed.to_dict() == EXPECTED[name]


def test_crlf_files_get_crlf_lines():
    parsed = NspawnFile("[Exec]\r\nBoot=yes\r\n")
    parsed.set("Exec", "Hostname", ["h"])
    parsed.set("Network", "Private", ["yes"])
    assert parsed.render() == "[Exec]\r\nBoot=yes\r\nHostname=h\r\n\r\n[Network]\r\nPrivate=yes\r\n"


def test_invalid_lines_are_kept_and_reported():
    parsed = NspawnFile(fixture("odd.nspawn"))
    assert parsed.invalid_lines() == [(5, "this line has no equals sign"), (6, "=no key"), (7, "[Broken")]
    assert parsed.get(None, "Outside") == ["section"]
    assert NspawnFile("[Exec]\nA=b \\\nc\nbad\n").invalid_lines() == [(4, "bad")]


def test_byte_order_mark():
    # systemd checks for comments before it skips the mark, so a marked first line is never a comment.
    text = u"\ufeff# not a comment\n[Exec]\nBoot=yes\n"
    parsed = NspawnFile(text)
    assert parsed.render() == text and parsed.invalid_lines() == [(1, u"\ufeff# not a comment")]
    assert NspawnFile(u"\ufeff[Exec]\nBoot=yes\n").to_dict() == {"Exec": {"Boot": ["yes"]}}


# Any text at all survives parse -> render unchanged.
PIECES = ["[", "]", "=", "#", ";", "\\", " ", "\t", "\n", "\r", "\r\n", "Exec", "Files", "Bind", "/a:/b", "yes", u"\ufeff", "é"]


@examples(300)
@given(st.lists(st.sampled_from(PIECES) | st.text(max_size=3), max_size=40).map("".join))
def test_any_text_round_trips(text):
    assert NspawnFile(text).render() == text


# --- edits ------------------------------------------------------------------------------------

def added_to(before, after):
    """The entries of ``after`` that are not ``before`` kept in order, or None when ``before`` is not."""
    added, position = [], 0
    for entry in after:
        if position < len(before) and entry == before[position]:
            position += 1
        else:
            added.append(entry)
    return added if position == len(before) else None


def other_entries(parsed, section, key):
    """(kind, section, key, value, text) of every line that is not ``key``, line endings aside."""
    return [(e.kind, e.section, e.key, e.value, e.raw.rstrip("\r\n")) for e in parsed.entries if not e.is_key(section, key)]


@pytest.mark.parametrize("name", FIXTURE_NAMES)
@pytest.mark.parametrize("section, key, values", [
    ("Files", "Bind", ["/x:/y", "/srv/src:/src"]),
    ("Files", "Bind", []),
    ("Exec", "Boot", ["no"]),
    ("Network", "Port", ["1:2", "3:4", "5:6"]),
    ("Exec", "Hostname", ["new"]),
    ("Files", "BindUser", ["alice"]),
])
def test_set_touches_only_its_key(name, section, key, values):
    parsed = NspawnFile(fixture(name))
    before = other_entries(parsed, section, key)
    before_dict = parsed.to_dict()
    changed = parsed.set(section, key, values)
    text = parsed.render()
    assert changed == (before_dict.get(section, {}).get(key, []) != values)
    assert parsed.get(section, key) == values
    reparsed = NspawnFile(text)
    assert reparsed.get(section, key) == values
    added = added_to(before, other_entries(reparsed, section, key))
    assert added is not None and len(added) <= 2 and all(entry[0] in ("blank", "section") for entry in added)
    expected = dict((s, dict((k, v) for k, v in keys.items() if (s, k) != (section, key))) for s, keys in before_dict.items())
    got = dict((s, dict((k, v) for k, v in keys.items() if (s, k) != (section, key))) for s, keys in reparsed.to_dict().items())
    assert dict((s, k) for s, k in got.items() if k) == dict((s, k) for s, k in expected.items() if k)
    assert parsed.set(section, key, values) is False and parsed.render() == text


def test_set_replaces_at_the_first_occurrence_and_keeps_unchanged_lines():
    parsed = NspawnFile(fixture("commented.nspawn"))
    assert parsed.set("Files", "Bind", ["/srv/data:/data:idmap", "/new:/new"])
    assert parsed.render().split("[Files]\n")[1].split("\n[Network]")[0] == (
        "# project sources, read-write\n"
        "Bind = /srv/data:/data:idmap\n"
        "Bind=/new:/new\n"
        ";Bind=/disabled\n"
        "BindReadOnly=/etc/ssl/certs\n")


def test_new_key_goes_after_the_last_line_of_the_section():
    parsed = NspawnFile("[Exec]\nBoot=yes\n# end of exec\n\n\n[Files]\nBind=/a\n[Exec]\nUser=u\n\n")
    parsed.set("Exec", "Hostname", ["h"])
    parsed.set("Files", "ReadOnly", ["yes"])
    assert parsed.render() == "[Exec]\nBoot=yes\n# end of exec\n\n\n[Files]\nBind=/a\nReadOnly=yes\n[Exec]\nUser=u\nHostname=h\n\n"


@pytest.mark.parametrize("text, expected", [
    ("", "[Network]\nVirtualEthernet=no\n"),
    ("[Exec]\nBoot=yes", "[Exec]\nBoot=yes\n\n[Network]\nVirtualEthernet=no\n"),
    ("[Exec]\nBoot=yes\n", "[Exec]\nBoot=yes\n\n[Network]\nVirtualEthernet=no\n"),
    ("[Exec]\nBoot=yes\n\n", "[Exec]\nBoot=yes\n\n[Network]\nVirtualEthernet=no\n"),
    ("# only a comment", "# only a comment\n\n[Network]\nVirtualEthernet=no\n"),
    ("[Network]", "[Network]\nVirtualEthernet=no\n"),
    ("[Network]\nVirtualEthernet=yes", "[Network]\nVirtualEthernet=no\n"),
    ("[Network]\nVirtualEthernet=yes\nPort=1", "[Network]\nVirtualEthernet=no\nPort=1"),
    ("[Network]\nVirtualEthernet=yes \\\n  # c\n", "[Network]\nVirtualEthernet=no\n"),
])
def test_set_edge_cases(text, expected):
    parsed = NspawnFile(text)
    assert parsed.set("Network", "VirtualEthernet", ["no"])
    assert parsed.render() == expected


def test_remove():
    parsed = NspawnFile(fixture("commented.nspawn"))
    assert parsed.remove("Files", "Bind")
    assert parsed.get("Files", "Bind") == [] and "Bind=/srv" not in parsed.render() and ";Bind=/disabled" in parsed.render()
    assert not parsed.remove("Files", "Bind")
    assert not parsed.remove("Nope", "Bind")
    assert parsed.set("Files", "Bind", []) is False


def test_purge_keeps_comments_and_drops_emptied_sections():
    parsed = NspawnFile(fixture("commented.nspawn"))
    assert parsed.purge({"Files": {"Bind"}, "Exec": set()})
    assert parsed.render() == (
        "# /etc/systemd/nspawn/web.nspawn - written by hand\n"
        "; semicolons start comments too\n"
        "\n"
        "[Files]\n"
        "# project sources, read-write\n"
        "Bind=/srv/src:/src\n"
        "Bind = /srv/data:/data:idmap\n"
        ";Bind=/disabled\n"
        "Bind=/srv/cache:/var/cache\n"
        "\n")
    assert not parsed.purge({"Files": {"Bind"}})


def test_purge_nothing_to_do():
    text = fixture("article.nspawn")
    parsed = NspawnFile(text)
    assert not parsed.purge({"Network": ["VirtualEthernet"], "Files": ["Bind", "BindReadOnly"]})
    assert parsed.render() == text


def test_purge_removes_keys_outside_sections_and_in_unknown_sections():
    parsed = NspawnFile(fixture("odd.nspawn"))
    assert parsed.purge({"Exec": {"Boot"}})
    assert parsed.to_dict() == {"Exec": {"Boot": ["yes"]}}
    assert parsed.get(None, "Outside") == []
    assert "[Broken" in parsed.render() and "[X-Custom]" not in parsed.render()


SECTION_KEYS = [(section, key) for section in SECTIONS for key in sorted(KEYS[section])][:12] + [("Exec", "Boot"), ("Files", "Bind")]
LINES = st.sampled_from(["[Exec]", "[Files]", "[Network]", "Boot=yes", "Bind = /a", "Bind=/b \\", "  Port=1", "# c", "; c", "",
                         "Hostname=x", "junk", "User=u\\\\"])


@examples(200)
@given(st.lists(LINES, max_size=12), st.sampled_from(["\n", "\r\n"]), st.booleans(), st.sampled_from(SECTION_KEYS),
       st.lists(st.sampled_from(["/a", "/b", "yes", "x y", "", "1:2"]), max_size=3))
def test_set_property(lines, newline, final_newline, section_key, values):
    section, key = section_key
    text = newline.join(lines) + (newline if final_newline and lines else "")
    parsed = NspawnFile(text)
    before = other_entries(parsed, section, key)
    parsed.set(section, key, values)
    rendered = parsed.render()
    reparsed = NspawnFile(rendered)
    assert reparsed.get(section, key) == values
    added = added_to(before, other_entries(reparsed, section, key))
    assert added is not None and len(added) <= 2 and all(entry[0] in ("blank", "section") for entry in added)
    assert reparsed.render() == rendered


KEEP = st.dictionaries(st.sampled_from(SECTIONS + ("X",)), st.sets(st.sampled_from(["Boot", "Bind", "Hostname", "Port", "User"])))


@examples(200)
@given(st.lists(LINES, max_size=12), KEEP)
def test_purge_property(lines, keep):
    parsed = NspawnFile("\n".join(lines))
    before = parsed.to_dict()
    parsed.purge(keep)
    reparsed = NspawnFile(parsed.render())
    expected = dict((section, dict((key, values) for key, values in keys.items() if key in keep.get(section, ())))
                    for section, keys in before.items())
    assert reparsed.to_dict() == dict((section, keys) for section, keys in expected.items() if keys)
    kept_lines = [(e.kind, e.raw.rstrip("\r\n")) for e in NspawnFile("\n".join(lines)).entries if e.kind in ("comment", "invalid")]
    assert [(e.kind, e.raw.rstrip("\r\n")) for e in reparsed.entries if e.kind in ("comment", "invalid")] == kept_lines
    assert parsed.purge(keep) is False


# --- values and validation --------------------------------------------------------------------

@pytest.mark.parametrize("value, expected", [
    (True, ["yes"]), (False, ["no"]), (0, ["0"]), (-5, ["-5"]), ("pick", ["pick"]), ("", [""]), (None, []), ([], []),
    (["/a", "/b"], ["/a", "/b"]), ([True, 2, "x"], ["yes", "2", "x"]), (("a",), ["a"]), ("C:\\\\", ["C:\\\\"]),
])
def test_to_values(value, expected):
    assert to_values(value, "Files", "Bind") == expected


@pytest.mark.parametrize("value, fragment", [
    ("a\nb", "a newline"), ("a\rb", "a carriage return"), ("a\0b", "a NUL character"), (" a", "leading or trailing blanks"),
    ("a\t", "leading or trailing blanks"), ("a\\", "line continuation"), ("a\\\\\\", "line continuation"), (1.5, "is a float"),
    ({"a": 1}, "is a dict"), ([["a"]], "is a list"), ("\ud800", "not valid UTF-8"),
])
def test_bad_values(value, fragment):
    with pytest.raises(NspawnSettingsError, match=fragment) as info:
        to_values(value, "Files", "Bind")
    assert str(info.value).startswith("[Files] Bind=: ")


def test_set_checks_values_and_names():
    parsed = NspawnFile()
    with pytest.raises(NspawnSettingsError, match="line continuation"):
        parsed.set("Files", "Bind", ["/a\\"])
    for section, key in (("Fi les", "Bind"), ("Files", "Bi=nd"), ("Files", ""), ("", "Bind"), (None, "Bind"), ("Files", 1)):
        with pytest.raises(NspawnSettingsError, match="letters and digits"):
            parsed.set(section, key, ["x"])
    assert parsed.render() == ""
    assert check_value("a b", "x") == "a b"


def test_key_table_matches_systemd():
    assert sum(1 for keys in KEYS.values() for spec in keys.values() if spec.since <= 257) == 61
    assert sum(len(keys) for keys in KEYS.values()) == 65
    since = dict(((section, key), spec.since) for section in KEYS for key, spec in KEYS[section].items())
    assert since[("Exec", "SuppressSync")] == 250
    assert since[("Files", "BindUser")] == since[("Files", "PrivateUsersOwnership")] == 249
    assert since[("Exec", "AmbientCapability")] == 248
    assert since[("Files", "Inaccessible")] == 242
    assert since[("Exec", "Ephemeral")] == 240
    assert since[("Exec", "NoNewPrivileges")] == since[("Exec", "LimitRTTIME")] == 239
    assert since[("Network", "VirtualEthernetExtra")] == 228
    # Read from systemd-nspawn 262 and its systemd.nspawn(5) (the lab's debian-sid host).
    assert since[("Files", "BindUserShell")] == 258
    assert since[("Network", "NamespacePath")] == 259
    assert since[("Exec", "PrivateUsersDelegate")] == 260
    assert since[("Exec", "RestrictAddressFamilies")] == 261
    assert KEYS["Files"]["PrivateUsersChown"].replaced_by == "PrivateUsersOwnership"
    multi = set(key for section in KEYS for key, spec in KEYS[section].items() if spec.multi)
    assert {"Bind", "BindReadOnly", "Port", "Environment", "Capability"} <= multi
    assert not multi & {"Boot", "VirtualEthernet", "Hostname", "Zone", "Bridge", "Private"}
    words = set(key for section in KEYS for key, spec in KEYS[section].items() if spec.words)
    assert words == {"Parameters", "Environment", "Capability", "DropCapability", "AmbientCapability", "SystemCallFilter",
                     "CPUAffinity", "BindUser", "Interface", "MACVLAN", "IPVLAN", "RestrictAddressFamilies"}
    assert words <= multi


@pytest.mark.parametrize("version", [249, "249", "249.11-0ubuntu3", " 249"])
def test_version_forms(version):
    assert check_key("Files", "BindUser", version).since == 249
    with pytest.raises(NspawnSettingsError, match="this host runs systemd %s" % version):
        check_key("Exec", "SuppressSync", version)


def test_unreadable_version():
    with pytest.raises(NspawnSettingsError, match="cannot read a systemd version from 'unknown'"):
        check_key("Exec", "Boot", "unknown")


@pytest.mark.parametrize("version", [252, 257, None])
def test_every_key_is_valid_on_debian_12_and_13(version):
    """Every key up to 257 is valid on 252 and 257 (those up to 252 on 252), every key without a version;
    the newer ones are refused."""
    for section in KEYS:
        for key in KEYS[section]:
            if version is None or KEYS[section][key].since <= int(version):
                assert check_key(section, key, version) is KEYS[section][key]
            else:
                assert KEYS[section][key].since > 252
                with pytest.raises(NspawnSettingsError, match="needs systemd %d or later" % KEYS[section][key].since):
                    check_key(section, key, version)


@pytest.mark.parametrize("section, key, version, fragment", [
    ("Exec", "SuppressSync", 249, r"^\[Exec\] SuppressSync= needs systemd 250 or later; this host runs systemd 249$"),
    ("Files", "BindUser", 247, r"^\[Files\] BindUser= needs systemd 249 or later; this host runs systemd 247$"),
    ("Exec", "Bind", 252, r"^\[Exec\] Bind= is not a setting of systemd.nspawn\(5\); Bind= belongs in \[Files\] \(this host runs systemd 252\)$"),
    ("Files", "Nope", None, r"^\[Files\] Nope= is not a setting of systemd.nspawn\(5\)$"),
    ("Service", "Boot", 257, r"^\[Service\] is not a section of .nspawn files; .*\(this host runs systemd 257\)$"),
    ("exec", "Boot", 257, r"^\[exec\] is not a section"),
    ("Files", "bind", 257, r"^\[Files\] bind= is not a setting"),
])
def test_check_key_errors(section, key, version, fragment):
    with pytest.raises(NspawnSettingsError, match=fragment):
        check_key(section, key, version)


def test_check_setting_single_value_keys():
    assert check_setting("Files", "Bind", ["/a", "/b"], 252).multi
    assert not check_setting("Exec", "Boot", ["yes"], 252).multi
    with pytest.raises(NspawnSettingsError, match=r"^\[Exec\] Boot= takes one value, got 2"):
        check_setting("Exec", "Boot", ["yes", "no"], 252)


@pytest.mark.parametrize("before, after, required", [
    ("[Exec]\nBoot=yes\n", "# note\n[Exec]\nBoot = yes\n", False),
    ("[Exec]\nBoot=yes\n", "[Exec]\nBoot=no\n", True),
    ("", "[Network]\nVirtualEthernet=no\n", True),
    ("[Network]\nVirtualEthernet=no\n", None, True),
    ("", None, False),
    ("[Files]\nBind=/a\nBind=/b\n", "[Files]\nBind=/b\nBind=/a\n", True),
])
def test_restart_required(before, after, required):
    assert restart_required(before, after) is required


@pytest.mark.parametrize("value, version, needs", [
    ("/srv/rw:/mnt/rw:idmap", 247, 250),
    ("/srv/rw:/mnt/rw:rbind,noidmap", 249, 250),
    ("/srv/rw:/mnt/rw:rootidmap", 250, 252),
    ("/srv/rw:/mnt/rw:owneridmap", 255, 256),
])
def test_bind_options_newer_than_the_host_are_refused(value, version, needs):
    """systemd-nspawn 247 (the lab's debian11 host) fails to start a machine with Bind=...:idmap."""
    with pytest.raises(NspawnSettingsError, match=r"bind option \w+ needs systemd %d or later; this host runs systemd %d$" % (needs, version)):
        check_setting("Files", "Bind", [value], version)


@pytest.mark.parametrize("value, version", [
    ("/srv/rw:/mnt/rw:idmap", 250), ("/srv/rw:/mnt/rw:rootidmap", 252), ("/srv/rw:/mnt/rw:owneridmap", 257),
    ("/srv/rw:/mnt/rw:norbind", 247), ("/srv/rw:/mnt/rw", 247), ("/srv/rw:/mnt/rw:idmap", None),
])
def test_bind_options_the_host_knows_are_accepted(value, version):
    assert check_setting("Files", "BindReadOnly", [value], version).multi
