"""Secrets: with -vvv, no password hash or URL token appears in Ansible's output, nor on the host
where the collection records things (origin records, /etc/systemd/nspawn, importd's image list).

One playbook on every lab host at verbosity 3: the role nspawn.nixos.sidecar with an image URL
and a SHA256SUMS URL that carry tokens (user:token@; the lab's image server ignores them) and
a root password hash, then nixos_config with a hash directly (chpasswd, and the declarative
users.mutableUsers = false), then nspawn_image's importd pull of a URL with a token. Every
secret is fresh per session. Everything is removed again at the end.
"""

import secrets
import subprocess

import pytest

from faults.harness import (
    Tally, image_sha256, image_url, judge_unchanged, on_hosts, redacted, role_play, run_fault, snapshots, tasks_play, with_credentials,
)

SUITE = "secrets"
SIDECAR_NAME = "sec-sidecar"
PULL_NAME = "sec-pull"
_RUNS = {}


def _password_hash():
    """A fresh sha512-crypt hash (openssl passwd -6) of a random password."""
    done = subprocess.run(["openssl", "passwd", "-6", "-stdin"], input=secrets.token_hex(12), capture_output=True, text=True, check=True)
    return done.stdout.strip()


class Secrets:
    """The secrets of one session and the URLs that carry the tokens."""

    def __init__(self, lab):
        self.image_token = "sec-image-" + secrets.token_hex(8)
        self.sums_token = "sec-sums-" + secrets.token_hex(8)
        self.pull_token = "sec-pull-" + secrets.token_hex(8)
        self.role_hash, self.chpasswd_hash, self.declarative_hash = _password_hash(), _password_hash(), _password_hash()
        self.image_url = with_credentials(image_url(lab), "sec", self.image_token)
        self.sums_url = with_credentials(image_url(lab, "SHA256SUMS"), "sec", self.sums_token)
        self.pull_url = with_credentials(image_url(lab), "sec", self.pull_token)
        # A token alone (https://TOKEN@host/...): before the fix nspawn_image let importd pull it, and the token stood
        # in the name of importd's hidden cache image and in the journal.
        self.alone_token = "sec-alone-" + secrets.token_hex(8)
        self.alone_url = image_url(lab).replace("://", "://%s@" % self.alone_token, 1)

    def all(self):
        """name -> secret value."""
        return {name: value for name, value in vars(self).items() if name.endswith(("_token", "_hash"))}

    def found_in(self, text):
        """Names of the secrets that text contains."""
        return sorted(name for name, value in self.all().items() if value in text)

    def where(self, text, limit=20):
        """The lines of text that hold a secret (for the failure message)."""
        return "\n".join(line[:300] for line in text.splitlines() if self.found_in(line))[:limit * 301]


def _plays(secret):
    nixos = {"name": SIDECAR_NAME, "timeout": 120}
    return [
        role_play("sidecar with secrets", {
            "sidecar_name": SIDECAR_NAME,
            "sidecar_image_url": secret.image_url,
            "sidecar_image_checksum": "sha256:" + secret.sums_url,
            "sidecar_root_password_hash": secret.role_hash,
            "sidecar_nixos_settings": {"environment": {"etc": {"sec-sidecar": {"text": "secrets test\n"}}}},
            "sidecar_wait_timeout": 120,
            "sidecar_pull_poll": 1,
        }),
        tasks_play("modules with secrets", [
            {"name": "Set the root password with chpasswd", "nspawn.nixos.nixos_config": dict(nixos, root_password_hash=secret.chpasswd_hash)},
            {"name": "Set the root password declaratively", "nspawn.nixos.nixos_config": dict(
                nixos, dest="/etc/nixos/sec-users.nix", settings={"users": {"mutableUsers": False}}, root_password_hash=secret.declarative_hash)},
            # method auto: a URL with a password is downloaded by the module, never pulled by importd (which
            # would keep the URL in the name of its cache image and log it) ...
            {"name": "Fetch an image from a URL with a token", "nspawn.nixos.nspawn_image": {
                "name": PULL_NAME, "url": secret.pull_url, "verify": "no"}},
            {"name": "Fetch an image from a URL with a token alone", "nspawn.nixos.nspawn_image": {
                "name": PULL_NAME + "-alone", "url": secret.alone_url, "verify": "no"}},
            # ... and method pull with such a URL is refused.
            {"name": "Refuse to pull a URL with a token with importd", "nspawn.nixos.nspawn_image": {
                "name": PULL_NAME + "-2", "url": secret.pull_url, "method": "pull", "verify": "no"}, "ignore_errors": True},
        ]),
    ]


def _cleanup_plays():
    return [
        role_play("remove the sidecar", {"sidecar_name": SIDECAR_NAME, "sidecar_state": "absent", "sidecar_image_url": "http://127.0.0.1/"}),
        tasks_play("remove the pulled images", [{"name": "Remove the pulled image %s" % name, "nspawn.nixos.nspawn_image": {
            "name": name, "state": "absent"}} for name in (PULL_NAME, PULL_NAME + "-alone")]),
    ]


def _host_texts(host):
    """What the collection keeps on the host that could hold a secret: origin records, settings
    files, and the names of every image (importd's hidden copies included)."""
    return {
        "origin records and settings files": host.run(["sh", "-c", "cat /var/lib/nspawn-nixos/origin/* /etc/systemd/nspawn/* 2>/dev/null"]).stdout,
        "machinectl list-images --all": host.run(["machinectl", "list-images", "--all", "--no-legend", "--no-pager"]).stdout,
    }


def _remove_token_images(host, secret):
    """Remove importd's hidden copies whose names hold a token (the role only knows its own URL)."""
    for line in host.run(["machinectl", "list-images", "--all", "--no-legend", "--no-pager"]).stdout.splitlines():
        name = line.split()[0] if line.split() else ""
        if secret.found_in(name):
            host.run(["machinectl", "remove", name])


@pytest.fixture(scope="module")
def secret_run(lab, ansible_runner):
    """The playbook with secrets at -vvv on every lab host, what the hosts keep, then the cleanup."""
    if "run" not in _RUNS:
        secret = Secrets(lab)
        run = run_fault(lab, ansible_runner, _plays(secret), verbosity=3)
        run.notes.update(secret=secret, texts=on_hosts(lab, _host_texts),
                         shadow=on_hosts(lab, lambda host: host.run(["cat", "/var/lib/machines/%s/etc/shadow" % SIDECAR_NAME]).stdout))
        cleanup = run_fault(lab, ansible_runner, _cleanup_plays())
        # nspawn_image state=absent leaves importd's hidden copy (the role removes the one of its own URL).
        on_hosts(lab, lambda host: _remove_token_images(host, secret))
        cleanup.before, cleanup.after = run.before, snapshots(lab)
        _RUNS["run"], _RUNS["cleanup"] = run, cleanup
    return _RUNS["run"]


def _assert_ran(run, host):
    failed = [record for record in run.result.tasks if record["host"] == host and record["status"] == "failed" and not record["ignored"]]
    assert not failed, run.explain(host)


def test_no_secret_in_output(lab_host, secret_run):
    """Neither a password hash nor a token appears in ansible-playbook -vvv's output, although
    all of them were used: the image came from the token URL, the last hash is root's."""
    host = lab_host.name
    secret = secret_run.notes["secret"]
    _assert_ran(secret_run, host)
    output = secret_run.result.stdout + secret_run.result.stderr
    assert len(output) > 10000, "suspiciously little output at -vvv:\n%s" % output
    assert not secret.found_in(output), "secrets %s in the -vvv output:\n%s" % (secret.found_in(output), secret.where(output))
    image = secret_run.record("Fetch, verify and import the image", host)["result"]
    assert image["origin"]["url"] == redacted(secret.image_url) and image["origin"]["checksum"] == "sha256:" + redacted(secret.sums_url), image
    assert secret.chpasswd_hash in secret_run.notes["shadow"][host], "root's hash in the machine is not the one set last"


def test_no_secret_in_records(lab_host, secret_run):
    """The origin records and the settings files on the host hold no secret."""
    host = lab_host.name
    secret = secret_run.notes["secret"]
    _assert_ran(secret_run, host)
    text = secret_run.notes["texts"][host]["origin records and settings files"]
    assert redacted(secret.image_url) in text, text
    assert not secret.found_in(text), "secrets %s in:\n%s" % (secret.found_in(text), secret.where(text))


def test_no_token_in_image_names(lab_host, secret_run):
    """The names of the images, importd's hidden copies included, hold no token: a URL with a token
    is downloaded by nspawn_image itself, and method=pull is refused for it."""
    host = lab_host.name
    secret = secret_run.notes["secret"]
    _assert_ran(secret_run, host)
    assert secret_run.record("Fetch an image from a URL with a token", host)["result"]["actions"][0] == "download"
    assert secret_run.record("Fetch an image from a URL with a token alone", host)["result"]["actions"][0] == "download"
    refused = secret_run.record("Refuse to pull a URL with a token with importd", host)["result"]
    assert refused["msg"].startswith("method: pull cannot be used with credentials in the URL"), refused
    text = secret_run.notes["texts"][host]["machinectl list-images --all"]
    assert not secret.found_in(text), "secrets %s in:\n%s" % (secret.found_in(text), secret.where(text))


def test_cleanup_leaves_nothing(lab, lab_host, secret_run):
    """The role and nspawn_image remove what the secrets playbook made (empty directories apart)."""
    del secret_run  # the cleanup ran with it
    host = lab_host.name
    judge_unchanged(Tally(lab), SUITE, "cleanup after secrets", _RUNS["cleanup"], host, ignore=("files//run/systemd/nspawn/locks/",),
                    new_dirs=True, why="apart from new empty directories")


EXPORT_DIR = "/var/tmp/sec-export"
# On the host, as nobody: until the test says stop, try to read every entry of the export's directory, and count the
# hidden ones (the export while it is written). Prints "read PATH" for each it could read, then "hidden N".
WATCHER = (
    "mkdir -p -m 0755 %(dir)s && exec setpriv --reuid=65534 --regid=65534 --clear-groups sh -c '"
    "hidden=0; i=0; while [ ! -e %(dir)s.done ] && [ $i -lt 30000 ]; do i=$((i+1)); "
    "for f in %(dir)s/* %(dir)s/.[!.]* %(dir)s/.[!.]*/*; do [ -e \"$f\" ] || continue; "
    "case \"$f\" in %(dir)s/.*) hidden=$((hidden+1));; esac; "
    "if [ -f \"$f\" ] && head -c 1 \"$f\" >/dev/null 2>&1; then echo \"read $f\"; fi; done; sleep 0.01; done; "
    "echo \"hidden $hidden\"'" % {"dir": EXPORT_DIR})


def test_export_is_private_while_it_is_written(lab, ansible_runner):
    """machinectl/importctl create the export file with 0666 minus their umask; before the fix it was chmod'ed to
    0600 only afterwards, and a local user who opened it early read the image, /etc/shadow included. Now no entry of
    the export's directory is readable by another user at any moment while it is written."""
    import threading

    watchers = {}

    def watch(host):
        host.run(["rm", "-rf", EXPORT_DIR, EXPORT_DIR + ".done"])
        watchers[host.name] = host.run(["sh", "-c", WATCHER], timeout=900)

    threads = [threading.Thread(target=watch, args=(host,)) for host in lab.hosts]
    for thread in threads:
        thread.start()
    image = {"name": "sec-export", "url": image_url(lab), "checksum": "sha256:" + image_sha256(lab)}
    try:
        run = ansible_runner.playbook([tasks_play("export", [
            {"name": "Import", "nspawn.nixos.nspawn_image": image},
            {"name": "Export", "nspawn.nixos.nspawn_image": dict(image, export_to=EXPORT_DIR + "/sec.tar.xz")},
            {"name": "Mode", "ansible.builtin.stat": {"path": EXPORT_DIR + "/sec.tar.xz"}, "register": "exported"},
        ])])
    finally:
        on_hosts(lab, lambda host: host.run(["touch", EXPORT_DIR + ".done"]))
        for thread in threads:
            thread.join(120)
        ansible_runner.playbook([tasks_play("remove", [
            {"name": "Remove", "nspawn.nixos.nspawn_image": {"name": "sec-export", "state": "absent"}}])])
        on_hosts(lab, lambda host: host.run(["rm", "-rf", EXPORT_DIR, EXPORT_DIR + ".done"]))
    assert run.rc == 0, str(run)
    for host in lab.hosts:
        lines = watchers[host.name].stdout.splitlines()
        assert lines and lines[-1].startswith("hidden "), (host.name, watchers[host.name].stdout, watchers[host.name].stderr)
        assert int(lines[-1].split()[1]) > 0, "the watcher never saw the export being written on %s" % host.name
        assert [line for line in lines if line.startswith("read ")] == [], (host.name, lines[:5])
        assert run.result("Mode", host.name)["stat"]["mode"] == "0600"
