"""The docs site in a real browser: Debian's Chromium, headless, on the built files (file:// URLs).

`make docs` builds the site (tests/docs/build_site.py) and then runs this module. Chromium
loads the pages, runs their scripts and prints the DOM it ends with (--dump-dom); the
assertions are on that DOM:

- the index: the collection's title and links to every module, plugin, role and guide page;
- the nixos_config page: its title, one row in the option table for every option of the
  module's DOCUMENTATION (as ansible-doc reads it), and the Examples section holding the
  module's first example task;
- a screenshot of the nixos_config page (tests/output/docs-nixos_config.png) of the window's
  size that is not blank (many distinct colours).
"""

import json
import os
import shutil
import struct
import subprocess
import sys
import zlib
from html.parser import HTMLParser
from pathlib import Path

import pytest
import yaml

CHECKOUT = Path(__file__).resolve().parents[2]
OUTPUT = CHECKOUT / "tests" / "output"
HTML = OUTPUT / "docs" / "build" / "html"
PAGES = HTML / "collections" / "nspawn" / "nixos"
SCREENSHOT = OUTPUT / "docs-nixos_config.png"
WINDOW = (1280, 3200)  # tall enough for the synopsis and the start of the option table
BIN = Path(sys.executable).parent


def chromium():
    found = shutil.which("chromium")
    if not found:
        pytest.fail("chromium is missing: make apt-deps installs Debian's package", pytrace=False)
    return found


def browse(page, *options):
    """Chromium's headless run on a file:// URL; returns its stdout."""
    argv = [chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--user-data-dir=%s" % (OUTPUT / "chromium-profile")]
    done = subprocess.run(argv + list(options) + [page.as_uri()], capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


class Dom(HTMLParser):
    """The text of a DOM, the hrefs of its links, the ids of its elements and the text of its sections."""

    def __init__(self, markup):
        super().__init__()
        self.links, self.ids, self.option_rows, self.sections, self.title = [], set(), [], {}, ""
        self._stack, self._open_sections, self._in_title = [], [], False
        self.feed(markup)

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "a" and attrs.get("href"):
            self.links.append(attrs["href"])
        if attrs.get("id"):
            self.ids.add(attrs["id"])
        if "ansible-option-title" in (attrs.get("class") or "").split():
            self.option_rows.append(attrs.get("id", ""))
        if tag == "section" and attrs.get("id"):
            self._open_sections.append([attrs["id"], len(self._stack)])
            self.sections[attrs["id"]] = ""
        self._in_title = tag == "title"
        if tag not in ("meta", "link", "br", "img", "input", "hr"):
            self._stack.append(tag)

    def handle_endtag(self, tag):
        if self._stack and self._stack[-1] == tag:
            self._stack.pop()
        if tag == "section" and self._open_sections and self._open_sections[-1][1] == len(self._stack):
            self._open_sections.pop()
        self._in_title = False

    def handle_data(self, data):
        if self._in_title:
            self.title += data
        for name, _depth in self._open_sections:
            self.sections[name] += data


def module_doc(name):
    env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=str(OUTPUT / "collections"))
    done = subprocess.run([str(BIN / "ansible-doc"), "--json", "-t", "module", "nspawn.nixos." + name],
                          capture_output=True, text=True, env=env, check=True)
    return json.loads(done.stdout)["nspawn.nixos." + name]


@pytest.fixture(scope="module")
def site():
    index = HTML / "index.html"
    if not index.exists():
        pytest.fail("%s is missing: make docs builds the site first" % index, pytrace=False)
    return index


def test_index_links_every_page(site):
    dom = Dom(browse(site, "--dump-dom"))
    assert dom.title.startswith("nspawn.nixos"), dom.title
    collection = Dom(browse(PAGES / "index.html", "--dump-dom"))
    expected = ["nixos_config_module.html", "nspawn_image_module.html", "nspawn_info_module.html", "nspawn_machine_module.html",
                "nspawn_settings_module.html", "machine_connection.html", "sidecars_inventory.html", "sidecar_role.html",
                "sidecar_errors_filter.html", "sidecar_host_filter.html", "sidecar_current_filter.html"]
    guides = yaml.safe_load((CHECKOUT / "docs" / "docsite" / "extra-docs.yml").read_text())["sections"]
    expected += ["docsite/%s.html" % name for section in guides for name in section["toctree"]]
    assert len(expected) > 9, guides
    missing = [page for page in expected if not any(link.split("#")[0] == page for link in collection.links)]
    assert not missing, (missing, collection.links)
    # The root index reaches the collection's index, and every expected page exists.
    assert any(link.split("#")[0] == "collections/index.html" for link in dom.links), dom.links
    for page in expected:
        assert (PAGES / page).is_file(), page


def test_nixos_config_page_renders_options_and_examples(site):
    doc = module_doc("nixos_config")
    dom = Dom(browse(PAGES / "nixos_config_module.html", "--dump-dom"))
    assert dom.title.startswith("nspawn.nixos.nixos_config module"), dom.title
    # One row of the option table per option of DOCUMENTATION (top level), named as ansible-doc names them.
    prefix = "ansible-collections-nspawn-nixos-nixos-config-module-parameter-"
    rendered = {row[len(prefix):] for row in dom.option_rows if row.startswith(prefix)}
    documented = {option.replace("_", "-") for option in doc["doc"]["options"]}
    assert documented <= rendered, sorted(documented - rendered)
    assert "nixpkgs" in dom.sections["parameters"] and "keep_generations" in dom.sections["parameters"]
    # The Examples section shows the module's examples: the first task's name and the module call.
    examples = yaml.safe_load(doc["examples"])
    first = examples[0]
    assert first["name"] in dom.sections["examples"], (first["name"], dom.sections["examples"][:2000])
    assert "nspawn.nixos.nixos_config:" in dom.sections["examples"]
    assert "return-values" in dom.sections and "changed" in dom.sections["return-values"]


def png_pixels(path):
    """(width, height, distinct byte values of the decompressed image data) of a PNG."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    width, height = struct.unpack(">II", data[16:24])
    idat, offset = b"", 8
    while offset < len(data):
        length, kind = struct.unpack(">I4s", data[offset:offset + 8])
        if kind == b"IDAT":
            idat += data[offset + 8:offset + 8 + length]
        offset += 12 + length
    return width, height, len(set(zlib.decompress(idat)))


def test_nixos_config_screenshot(site):
    if SCREENSHOT.exists():
        SCREENSHOT.unlink()
    browse(PAGES / "nixos_config_module.html", "--screenshot=%s" % SCREENSHOT, "--window-size=%d,%d" % WINDOW)
    assert SCREENSHOT.is_file()
    width, height, distinct = png_pixels(SCREENSHOT)
    assert (width, height) == WINDOW, (width, height)
    assert SCREENSHOT.stat().st_size > 30000, SCREENSHOT.stat().st_size
    assert distinct > 100, distinct  # text, the theme's sidebar and code colours; a blank page has a handful
    print("screenshot: %s (%dx%d, %d bytes)" % (SCREENSHOT, width, height, SCREENSHOT.stat().st_size))
