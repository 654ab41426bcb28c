"""make docs: the collection's docs site, built offline with antsibull-docs and Sphinx.

    python tests/docs/build_site.py [DEST]      (default tests/output/docs)

1. antsibull-docs sphinx-init --use-current: the Sphinx project (conf.py, antsibull-docs.cfg),
   our index page (tests/docs/index.rst);
2. conf.py's intersphinx: only ansible_devel, from a local inventory (tests/docs/
   ansible_devel_inventory.txt, written as objects.inv) - nothing is fetched;
3. antsibull-docs collection --use-current --fail-on-error: the pages of every module, the
   role (its argument spec), the connection, inventory and filter plugins, and the guides of
   docs/docsite (extra-docs.yml); the guides' playbooks (docs/docsite/playbooks) are copied
   next to them, so that their literalinclude shows the files the tests run;
4. sphinx-build -W --keep-going: every warning fails the build.

Prints the time and the number of warnings; exits non-zero on any error or warning.
"""

import os
import re
import shutil
import subprocess
import sys
import time
import zlib
from pathlib import Path

HERE = Path(__file__).resolve().parent
CHECKOUT = HERE.parents[1]
BIN = Path(sys.executable).parent
COLLECTION = "nspawn.nixos"
COLLECTION_DIR = ("collections", "nspawn", "nixos")


def run(argv, cwd, log):
    """Run a command, its output into log and (on failure) onto stderr; return the output."""
    done = subprocess.run(argv, cwd=cwd, capture_output=True, text=True, check=False)
    output = done.stdout + done.stderr
    log.write("$ %s\n%s\n" % (" ".join(argv), output))
    if done.returncode != 0:
        sys.stderr.write(output[-8000:])
        raise SystemExit("docs: %s failed (rc=%d)" % (argv[0], done.returncode))
    return output


def write_inventory(source, target):
    """Sphinx's objects.inv (version 2) from the plain list in source."""
    entries = []
    for line in source.read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, role, priority, uri, display = line.split(None, 4)
            entries.append("%s %s %s %s %s\n" % (name, role, priority, uri, display))
    header = "# Sphinx inventory version 2\n# Project: Ansible\n# Version: devel\n# The remainder of this file is compressed using zlib.\n"
    target.write_bytes(header.encode() + zlib.compress("".join(entries).encode()))
    return len(entries)


def main():
    dest = Path(sys.argv[1] if len(sys.argv) > 1 else CHECKOUT / "tests" / "output" / "docs").resolve()
    started = time.monotonic()
    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir(parents=True)
    env_path = "%s:%s" % (BIN, os.environ.get("PATH", ""))
    os.environ["PATH"] = env_path
    with open(dest / "build.log", "w") as log:
        run([str(BIN / "antsibull-docs"), "sphinx-init", "--use-current", "--dest-dir", str(dest), "--fail-on-error",
             "--project", COLLECTION, "--copyright", "nspawn.nixos developers",
             "--title", "nspawn.nixos documentation", "--html-short-title", "nspawn.nixos",
             "--index-rst-source", str(HERE / "index.rst"), COLLECTION], dest, log)

        conf = dest / "conf.py"
        text = conf.read_text()
        mapping = re.compile(r"^intersphinx_mapping = \{\n.*?^\}\n", re.M | re.S)
        assert mapping.search(text), "conf.py of antsibull-docs sphinx-init has no intersphinx_mapping"
        text = mapping.sub("intersphinx_mapping = {\n    'ansible_devel': ('https://docs.ansible.com/projects/ansible/devel/', "
                           "%r),\n}\n" % str(dest / "ansible_devel.inv"), text)
        conf.write_text(text)
        labels = write_inventory(HERE / "ansible_devel_inventory.txt", dest / "ansible_devel.inv")

        rst = dest / "rst"
        rst.mkdir(mode=0o755, exist_ok=True)
        os.chmod(rst, 0o755)  # antsibull-docs wants the directory writable by itself only
        run([str(BIN / "antsibull-docs"), "--config-file", str(dest / "antsibull-docs.cfg"), "collection",
             "--cleanup", "everything", "--fail-on-error", "--use-current", "--dest-dir", str(rst), COLLECTION], dest, log)
        shutil.copytree(CHECKOUT / "docs" / "docsite" / "playbooks", rst.joinpath(*COLLECTION_DIR, "playbooks"))

        output = run([str(BIN / "sphinx-build"), "-M", "html", "rst", "build", "-c", ".", "-W", "--keep-going", "-q"], dest, log)
    warnings = len(re.findall(r"WARNING:", output))
    html = dest / "build" / "html"
    pages = sorted(str(page.relative_to(html)) for page in html.rglob("*.html") if page.name not in ("search.html", "genindex.html"))
    print("docs: %d pages in %s (%d external labels listed for intersphinx)" % (len(pages), html, labels))
    for page in pages:
        print("  " + page)
    print("docs: %d warnings, %.1f s" % (warnings, time.monotonic() - started))
    if warnings:
        sys.stderr.write(output)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
