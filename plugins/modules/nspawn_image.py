#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright (c) nspawn.nixos contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
module: nspawn_image
short_description: Download, verify, import, export or remove a systemd-nspawn machine image
version_added: 1.0.0
description:
  - Makes an image available in C(/var/lib/machines) under O(name) from a C(.tar) (or C(.raw)) image at O(url),
    and records where it came from, so that a later run with another O(url) or O(checksum) reports the
    difference (O(force)) instead of replacing a container's data.
  - B(Pull) - without a O(checksum), with an http(s) URL and with C(systemd-importd) installed, importd downloads the
    image - C(importctl pull-tar --class=machine) on systemd 256 and later, C(machinectl pull-tar) before - and
    checks it as O(verify) says.
  - B(Download) - with a O(checksum), with a C(file://) URL, with O(method=download), or when C(systemd-importd) is not
    installed (RHEL family), the module downloads the image itself to a temporary file in C(/var/lib/machines),
    checks its sha256, and only then imports it (C(importctl import-tar --class=machine), C(machinectl import-tar), or
    without importd C(tar) into a temporary directory that is renamed into place). A failed, interrupted or
    mismatching download leaves no image and no partial file.
  - B(Interrupted transfers) end whole. Before a transfer starts the module writes a pending record
    (C(/var/lib/nspawn-nixos/pending/NAME.json)). On SIGINT, SIGTERM or SIGHUP it cancels importd's transfer into
    NAME (C(machinectl) and C(importctl) only detach on Ctrl-C, importd goes on), then records the image if it was
    complete, or removes every trace of the transfer. When the module cannot act (SIGKILL, for example the
    C(async) timeout, or a lost host), the next run of the module for NAME finds the pending record, cancels a
    transfer still running and records the complete image or cleans up (action V(recover), with a warning).
  - The origin record is C(/var/lib/nspawn-nixos/origin/NAME.json) (url with any password removed, sha256, method, time).
  - Upstream NixOS images (U(https://github.com/tfc/nspawn-nixos/releases)) publish no C(SHA256SUMS) and no signature,
    so pin their sha256 with O(checksum); without one the module warns that the image is unverified and, when it
    downloaded the file itself, returns its sha256 to pin.
author:
  - nspawn.nixos developers (@nspawn-nixos)
extends_documentation_fragment:
  - nspawn.nixos.attributes
  - nspawn.nixos.machine
options:
  state:
    description:
      - V(present) makes sure the image exists (and is exported to O(export_to) when given).
      - V(absent) removes the image (C(machinectl remove), which also deletes C(/etc/systemd/nspawn/NAME.nspawn))
        and its origin record. It fails while the machine runs - stop it with M(nspawn.nixos.nspawn_machine) first.
    type: str
    choices: [present, absent]
    default: present
  url:
    description:
      - Where the image comes from - an V(http://), V(https://) or V(file://) URL of a C(.tar), C(.tar.gz), C(.tar.xz),
        C(.tar.bz2) or C(.tar.zst) archive, or of a C(.raw)/C(.img)/C(.qcow2) disk image (optionally compressed).
      - Required when the image does not exist yet.
      - A C(user:password@) or a token alone (C(https://TOKEN@host/...)) in the URL is sent as HTTP basic
        authentication (not forwarded on redirects) and is hidden in the task's output and in the origin record.
        Such a URL is always downloaded by the module (O(method=pull) is refused), because importd would keep the
        URL, credentials included, in the name of its cache image (which every local user can list) and write it
        to the journal. The filter P(nspawn.nixos.url_secret#filter) applies the same rule in a playbook.
    type: str
  checksum:
    description:
      - The image's expected sha256, as V(sha256:<64 hex digits>), or as V(sha256:<URL>) of a C(SHA256SUMS) file that
        lists the image's file name, in the formats C(sha256sum) writes (also with C(--tag)).
      - Given a checksum, the module downloads and verifies the image itself (see B(Download) above).
    type: str
  verify:
    description:
      - How importd verifies a pulled image (C(--verify=)) - V(no), V(checksum) (the server's C(.sha256) or
        C(SHA256SUMS) beside the image) or V(signature) (also its GPG signature).
      - For a download by the module without O(checksum), V(checksum) verifies against the C(SHA256SUMS) file in the
        same directory as O(url); V(signature) cannot be used there.
      - The default is V(no), with a warning, because the upstream NixOS images publish neither checksums nor
        signatures. Prefer a pinned O(checksum).
    type: str
    choices: ['no', checksum, signature]
    default: 'no'
  method:
    description:
      - V(auto) pulls with importd where it can and downloads otherwise (see above).
      - V(pull) always lets importd download (fails without importd, with a C(file://) URL, with O(checksum), or with a
        password in O(url)). When importd fails, the last lines of its journal are in the error message (importd works
        in its own service; a damaged archive or a refused connection is reported there).
      - V(download) always downloads in the module, e.g. where SELinux policy keeps importd from downloading.
    type: str
    choices: [auto, pull, download]
    default: auto
  force:
    description:
      - Replace the image when its recorded origin (URL, or pinned sha256) differs from O(url) and O(checksum), or when
        there is no origin record (an image not created by this module). This removes the image and everything the
        container wrote into it. It fails while the machine runs.
      - Without O(force), such a difference is reported in RV(drift) with a warning, and nothing changes.
      - With O(export_to), also overwrite an existing export file (so the task always changes).
    type: bool
    default: false
  adopt:
    description:
      - When the image exists but has no origin record (it was not imported by this module, or an import was interrupted
        before its origin was recorded) or a different one, record this request (O(url), O(checksum)) as its origin and
        keep the image and everything in it as it is. Nothing is fetched; the record's C(method) is V(adopt), so it
        says that the module did not verify the content - adopt an image only when you know it is the one the request
        names (for example, you pinned its sha256 when you imported it).
      - Mutually exclusive in effect with O(force), which replaces the image instead.
    type: bool
    default: false
  export_to:
    description:
      - Absolute path of a file to export the image to (C(importctl export-tar)/C(export-raw) on systemd 256 and later,
        C(machinectl export-tar)/C(export-raw) before). The suffix selects format and compression - C(.tar), C(.tar.gz),
        C(.tar.xz), C(.tar.bz2), C(.raw), C(.raw.gz), C(.raw.xz), C(.raw.bz2). C(.tar.gz) is much faster than C(.tar.xz).
      - Skipped when the file exists, unless O(force=true). Written into a private (C(0700)) directory beside it with
        umask C(077), so that the file is C(0600) from its first byte (it holds the container's C(/etc/shadow)), and
        renamed when complete. Stop the machine first for a consistent export.
    type: path
  timeout:
    description:
      - Network timeout in seconds (connect, and each read) for downloads done by the module and for C(SHA256SUMS) files.
    type: int
    default: 60
notes:
  - Long downloads can outlast an SSH connection; run the task with C(async).
  - importd keeps a hidden read-only copy of each pulled URL (C(.tar-<url>)); a second pull of a URL whose server sends
    no C(ETag) fails in importd. C(machinectl clean) removes those copies.
seealso:
  - module: nspawn.nixos.nspawn_machine
  - name: importctl(1)
    description: Download, import or export disk images (systemd 256 and later).
    link: https://www.freedesktop.org/software/systemd/man/latest/importctl.html
"""

EXAMPLES = r"""
- name: NixOS image with its sha256 pinned (downloaded and verified by the module)
  nspawn.nixos.nspawn_image:
    name: nixos
    url: "https://github.com/tfc/nspawn-nixos/releases/latest/download/nixos-system-{{ ansible_facts['architecture'] }}-linux.tar.xz"
    checksum: "sha256:{{ nixos_image_sha256 }}"

- name: Image from a server that publishes SHA256SUMS beside it
  nspawn.nixos.nspawn_image:
    name: fixture
    url: http://127.0.0.1:8000/image.tar.gz
    checksum: sha256:http://127.0.0.1:8000/SHA256SUMS

- name: Unverified pull through importd, as in machinectl pull-tar --verify=no (warns)
  nspawn.nixos.nspawn_image:
    name: nixos
    url: https://github.com/tfc/nspawn-nixos/releases/latest/download/nixos-system-x86_64-linux.tar.xz
  async: 1800
  poll: 10

- name: Back the image up (stop the machine first)
  nspawn.nixos.nspawn_image:
    name: nixos
    export_to: /var/tmp/nixos-backup.tar.gz

- name: Remove the image
  nspawn.nixos.nspawn_image:
    name: nixos
    state: absent
- name: Adopt an image that exists without an origin record (e.g. an interrupted run), keeping its data
  nspawn.nixos.nspawn_image:
    name: nixos
    url: https://github.com/tfc/nspawn-nixos/releases/download/v1.3.0/nixos-system-x86_64-linux.tar.xz
    checksum: sha256:0000000000000000000000000000000000000000000000000000000000000000
    adopt: true
"""

RETURN = r"""
actions:
  description:
    - What the module did, in order (in check mode, what it would do); empty when nothing changed.
    - V(pull), V(download), V(import), V(record_origin), V(remove), V(remove_origin), V(export);
      V(recover) (an earlier run's interrupted transfer was settled first) and V(cancel_transfer) (importd's
      transfer into the image was cancelled).
  returned: always
  type: list
  elements: str
  sample: [download, import, record_origin]
image:
  description: The image's properties from C(machinectl show-image); null when there is no image.
  returned: success
  type: dict
  sample: {Name: nixos, Path: /var/lib/machines/nixos, Type: directory, ReadOnly: "no"}
origin:
  description: The recorded origin of the image; null when there is none.
  returned: success
  type: dict
  sample:
    name: nixos
    url: https://github.com/tfc/nspawn-nixos/releases/latest/download/nixos-system-x86_64-linux.tar.xz
    checksum: null
    sha256: 5a7c1c0ef3dd24c76a8a7e8ce8b7e4d7a2bdb4c5c27b1d08b3f1d2e0b9c3c4d5
    method: download
    verify: "no"
    kind: tar
    time: "2025-01-01T12:00:00+00:00"
sha256:
  description:
    - sha256 of the image file - computed by the module when it downloaded it (pin it with O(checksum)),
      else the recorded one; null when importd pulled it.
  returned: when state=present
  type: str
  sample: 5a7c1c0ef3dd24c76a8a7e8ce8b7e4d7a2bdb4c5c27b1d08b3f1d2e0b9c3c4d5
drift:
  description:
    - How the recorded origin differs from the requested O(url) and pinned O(checksum) (keys V(url), V(sha256), each
      with V(recorded) and V(requested)); empty when it does not. Reported with a warning, nothing replaced,
      unless O(force=true) (the image is replaced) or O(adopt=true) (the request is recorded as its origin). An image
      without any origin record has V(recorded) null.
  returned: success
  type: dict
  sample: {url: {recorded: "https://example.org/old.tar.xz", requested: "https://example.org/new.tar.xz"}}
export_to:
  description: The file the image was exported to.
  returned: when the module exported the image
  type: str
  sample: /var/tmp/nixos-backup.tar.gz
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.nspawn.nixos.plugins.module_utils._core._backend import machine_argument_spec
from ansible_collections.nspawn.nixos.plugins.module_utils._backends.image import ImageBackend


def main():
    module = AnsibleModule(
        argument_spec=machine_argument_spec(
            state=dict(type="str", default="present", choices=["present", "absent"]),
            url=dict(type="str"),
            checksum=dict(type="str"),
            verify=dict(type="str", default="no", choices=["no", "checksum", "signature"]),
            method=dict(type="str", default="auto", choices=["auto", "pull", "download"]),
            force=dict(type="bool", default=False),
            adopt=dict(type="bool", default=False),
            export_to=dict(type="path"),
            timeout=dict(type="int", default=60),
        ),
        supports_check_mode=True,
    )
    ImageBackend(module).execute()


if __name__ == "__main__":
    main()
