# -*- coding: utf-8 -*-
# Copyright (c) nspawn.nixos contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations


class ModuleDocFragment:

    # The machine (and image) name option shared by the modules.
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
"""
