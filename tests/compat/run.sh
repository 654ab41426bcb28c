#!/usr/bin/env bash
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
#
# The collection under one ansible-core version: sanity, units and one integration target.
#
#   tests/compat/run.sh VERSION [STEP...]      VERSION: a line of tests/compat/versions
#                                              STEP: venv sanity sanity-lowest units integration
#                                              (default: all of them but sanity-lowest)
#
# Each version has its own venv (tests/output/compat/venv-VERSION, pinned by
# tests/compat/ansible-core-VERSION.txt) on the controller Python of tests/compat/versions,
# and its own sanity copy (/var/tmp/nspawn-nixos-sanity-compat-VERSION). sanity-lowest runs
# the compile and import tests of the modules on the lowest target Python (3.9).
# integration runs the nspawn_info target (tests/integration/test_targets.py) on one
# Debian 12 lab host with this venv's ansible-playbook.
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
CHECKOUT=$(cd "$HERE/../.." && pwd)
VERSION=${1:?usage: $0 VERSION [STEP...]}
shift
STEPS=${*:-venv sanity units integration}
LOWEST_TARGET_PYTHON=3.9

line=$(awk -v v="$VERSION" '$1 == v' "$HERE/versions")
[ -n "$line" ] || { echo "compat: $VERSION is not in tests/compat/versions" >&2; exit 2; }
read -r _ CORE CONTROLLER_PYTHON <<<"$line"
VENV=$CHECKOUT/tests/output/compat/venv-$VERSION
REQUIREMENTS=$HERE/ansible-core-$VERSION.txt
SANITY_ROOT=/var/tmp/nspawn-nixos-sanity-compat-$VERSION
SANITY_COPY=$SANITY_ROOT/ansible_collections/nspawn/nixos

# A real interpreter of version X.Y (pyenv's shims only print an error when no version is selected).
find_python() {
    local want=$1 candidate
    for candidate in "${PYENV_ROOT:-$HOME/.pyenv}"/versions/"$want".*/bin/python"$want" \
                     /usr/bin/python"$want" /usr/local/bin/python"$want" "$(command -v python"$want" || true)"; do
        if [ -x "$candidate" ] && "$candidate" -c 'import ensurepip, ssl, venv' 2>/dev/null; then
            echo "$candidate"; return 0
        fi
    done
    return 1
}

step_venv() {
    local python
    python=$(find_python "$CONTROLLER_PYTHON") || {
        echo "compat $VERSION: no Python $CONTROLLER_PYTHON found (pyenv's versions, /usr/bin, /usr/local/bin, PATH);" \
             "ansible-core $CORE needs it as the controller" >&2; exit 1; }
    if [ -f "$VENV/.installed" ] && [ "$VENV/.installed" -nt "$REQUIREMENTS" ] \
       && [ "$("$VENV/bin/python" -c 'import sys; print("%d.%d" % sys.version_info[:2])')" = "$CONTROLLER_PYTHON" ]; then
        return 0
    fi
    rm -rf "$VENV"
    "$python" -m venv "$VENV"
    "$VENV/bin/pip" install -q --disable-pip-version-check -r "$REQUIREMENTS" 2>&1 | { grep -v "^WARNING: Location" || true; }
    "$VENV/bin/pip" check
    [ "$("$VENV/bin/ansible" --version | sed -n '1s/.*core \([0-9.]*\).*/\1/p')" = "$CORE" ] || {
        echo "compat $VERSION: the venv does not have ansible-core $CORE" >&2; exit 1; }
    touch "$VENV/.installed"
}

# The tracked (and new, not ignored) files at a path ansible-test accepts, as `make sanity` does.
sanity_copy() {
    rm -rf "$SANITY_COPY" && mkdir -p "$SANITY_COPY"
    (cd "$CHECKOUT" && git ls-files -z --cached --others --exclude-standard |
        while IFS= read -r -d '' f; do [ -e "$f" ] && printf '%s\0' "$f"; done |
        tar --null -T - -cf - | tar -C "$SANITY_COPY" -xf -)
}

# ansible-test bootstraps pip in its venvs with get_pip_<pip version>.py from its cache, which it
# otherwise downloads from a host we cannot reach (tests/sanity/get-pip/get_pip_offline.py).
get_pip_offline() {
    local cache=$HOME/.ansible/test/cache pip_version
    mkdir -p "$cache"
    pip_version=$("$VENV/bin/python" - <<'EOF'
import ansible_test._internal.python_requirements as requirements
import inspect, re
print(" ".join(sorted(set(re.findall(r"pip='([0-9.]+)'", inspect.getsource(requirements.get_venv_packages))))))
EOF
)
    for v in $pip_version; do
        install -m 0644 "$CHECKOUT/tests/sanity/get-pip/get_pip_offline.py" "$cache/get_pip_${v//./_}.py"
    done
}

step_sanity() {
    sanity_copy
    get_pip_offline
    (cd "$SANITY_COPY" && "$VENV/bin/ansible-test" sanity --venv --python "$CONTROLLER_PYTHON" --color no)
}

# The modules on the lowest target Python: does every file compile, does every module import.
step_sanity-lowest() {
    local python
    python=$(find_python "$LOWEST_TARGET_PYTHON") || {
        echo "compat $VERSION: no Python $LOWEST_TARGET_PYTHON found for the lowest target" >&2; exit 1; }
    sanity_copy
    get_pip_offline
    (cd "$SANITY_COPY" && PATH=$(dirname "$python"):$PATH "$VENV/bin/ansible-test" sanity --venv \
        --python "$LOWEST_TARGET_PYTHON" --test compile --test import --color no)
}

step_units() {
    (cd "$CHECKOUT" && "$VENV/bin/pytest" -q -p no:cacheprovider tests/unit)
}

step_integration() {
    (cd "$CHECKOUT" && NSPAWN_LAB_REQUIRED=1 NSPAWN_LAB_RELEASES=12 ANSIBLE_COLLECTIONS_PATH=$CHECKOUT/tests/output/collections \
        "$VENV/bin/pytest" -p no:cacheprovider tests/integration/test_targets.py -k "test_target and nspawn_info")
}

for step in $STEPS; do
    start=$(date +%s)
    echo "=== compat ansible-core $CORE (controller Python $CONTROLLER_PYTHON): $step"
    "step_$step"
    echo "=== compat ansible-core $CORE: $step passed in $(( $(date +%s) - start )) s"
done
