# -*- coding: utf-8 -*-
# Copyright (c) nspawn.nixos contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations


class ModuleDocFragment:

    # The options of every module that changes one machine (its image, settings, NixOS configuration or state):
    # the machine's name and the per-machine lock. _backend.machine_argument_spec() is their argument spec.
    DOCUMENTATION = r"""
options:
  name:
    description:
      - Name of the machine, which is also the name of its image in C(/var/lib/machines) and of
        its settings file C(/etc/systemd/nspawn/NAME.nspawn).
      - Follows the rules of C(machinectl) for machine names (host names) - 1 to 64 characters from
        V(a-z), V(A-Z), V(0-9), V(-), V(_) and V(.); not starting or ending with V(-) or V(.); no V(..).
    type: str
    required: true
  lock_timeout:
    description:
      - Seconds to wait for another task that is changing the same machine (its image, settings file, NixOS
        configuration or state) on this host, for example from a second playbook run at the same time.
      - The modules of this collection take turns per machine name through an C(flock) on
        C(/run/nspawn-nixos/locks/NAME.lock), held from before the module reads the state until it exits
        (shared in check mode). A wait of a second or more is reported as a warning.
      - After O(lock_timeout) seconds the task fails with a message naming the task that holds the lock.
        V(0) fails at once when the machine is busy.
    type: int
    default: 600
"""
