# -*- coding: utf-8 -*-
# Copyright (c) nspawn.nixos contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""The scenarios' tests share helpers and tests in ../../shared/tests (see molecule.yml)."""

from __future__ import annotations

import os
import sys

SHARED = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "shared", "tests")
if SHARED not in sys.path:
    sys.path.insert(0, os.path.normpath(SHARED))
