"""What a lab host's sidecar state looks like, to compare before and after a failure.

    before = host_snapshot(host)
    ... a bad input or a fault ...
    assert_unchanged(before, host_snapshot(host))

A snapshot (a dict, JSON-serialisable) holds:

    files        every entry under /etc/systemd/nspawn, /run/systemd/nspawn,
                 /var/lib/nspawn-nixos and /var/tmp/nspawn-nixos: type, mode, owner,
                 size, sha256 of regular files, target of symlinks
    machines_dir the top level of /var/lib/machines, hidden entries included (a .part
                 download, importd's .tar-<url> cache, a half-imported tree): type, mode,
                 owner, size of files
    images       per image directory: sha256 of every file under etc/nixos, the targets
                 of nix/var/nix/profiles/* (the generations), etc/os-release's sha256.
                 Not the whole tree: a running machine writes its journal and /var.
    machines     `machinectl list` (name, class, state) and the machines enabled at
                 boot (the entries of /etc/systemd/system/machines.target.wants:
                 `systemctl list-unit-files` does not list template instances)
    image_list   `machinectl list-images --all` (name, type, read-only)

It is taken inside the host with nsenter (no SSH, no Ansible), by one python3 call.
"""

import json

SNAPSHOT_SCRIPT = r'''
import hashlib, json, os, stat, subprocess

def digest(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()

def entry(path, hash_files=True):
    st = os.lstat(path)
    item = {"mode": "%o" % stat.S_IMODE(st.st_mode), "uid": st.st_uid, "gid": st.st_gid}
    if stat.S_ISLNK(st.st_mode):
        item.update(type="link", target=os.readlink(path))
    elif stat.S_ISDIR(st.st_mode):
        item["type"] = "dir"
    elif stat.S_ISREG(st.st_mode):
        item.update(type="file", size=st.st_size)
        if hash_files:
            item["sha256"] = digest(path)
    else:
        item["type"] = "other"
    return item

def walk(top, hash_files=True):
    found = {}
    if not os.path.lexists(top):
        return found
    found[top] = entry(top, hash_files)
    for root, dirs, files in os.walk(top):
        for name in sorted(dirs + files):
            path = os.path.join(root, name)
            found[path] = entry(path, hash_files)
    return found

def lines(argv):
    done = subprocess.run(argv, capture_output=True, text=True)
    if done.returncode != 0:
        return ["rc=%d %s" % (done.returncode, done.stderr.strip())]
    return sorted(line.split() for line in done.stdout.splitlines() if line.strip())

files = {}
for top in ("/etc/systemd/nspawn", "/run/systemd/nspawn", "/var/lib/nspawn-nixos", "/var/tmp/nspawn-nixos"):
    files.update(walk(top))

machines_dir, images = {}, {}
if os.path.isdir("/var/lib/machines"):
    for name in sorted(os.listdir("/var/lib/machines")):
        path = os.path.join("/var/lib/machines", name)
        machines_dir[name] = entry(path, hash_files=False)
        if machines_dir[name]["type"] == "dir":
            image = {"etc/nixos": {p[len(path) + 1:]: v for p, v in walk(os.path.join(path, "etc/nixos")).items()}}
            profiles = os.path.join(path, "nix/var/nix/profiles")
            image["profiles"] = {n: os.readlink(os.path.join(profiles, n)) for n in sorted(os.listdir(profiles))
                                 if os.path.islink(os.path.join(profiles, n))} if os.path.isdir(profiles) else {}
            release = os.path.join(path, "etc/os-release")
            image["os-release"] = digest(release) if os.path.isfile(release) else None
            images[name] = image

machines = lines(["machinectl", "list", "--no-legend", "--no-pager"])
states = {}
for row in machines:
    if isinstance(row, list) and row:
        shown = subprocess.run(["machinectl", "show", row[0], "-p", "State", "--value"], capture_output=True, text=True)
        states[row[0]] = shown.stdout.strip()
wants = "/etc/systemd/system/machines.target.wants"
enabled = sorted(os.listdir(wants)) if os.path.isdir(wants) else []
print(json.dumps({"files": files, "machines_dir": machines_dir, "images": images,
                  "machines": {"list": [r[:2] if isinstance(r, list) else r for r in machines], "states": states, "enabled": enabled},
                  "image_list": lines(["machinectl", "list-images", "--all", "--no-legend", "--no-pager"])}, sort_keys=True))
'''


def parse_snapshot(output):
    """The snapshot from what SNAPSHOT_SCRIPT printed (also when a playbook task ran it)."""
    data = json.loads(output)
    # list-images shows sizes and times that move while a machine runs: keep name, type, ro.
    data["image_list"] = [row[:3] if isinstance(row, list) else row for row in data["image_list"]]
    return data


def host_snapshot(host):
    """The snapshot of a lab host (see the module's docstring)."""
    done = host.run(["python3", "-c", SNAPSHOT_SCRIPT], timeout=120)
    if done.returncode != 0:
        raise RuntimeError("snapshot of %s failed (rc %d): %s" % (host.name, done.returncode, done.stderr))
    return parse_snapshot(done.stdout)


def differences(before, after, prefix=""):
    """A list of human-readable differences between two snapshots (empty when equal)."""
    found = []
    if isinstance(before, dict) and isinstance(after, dict):
        for key in sorted(set(before) | set(after), key=str):
            where = "%s/%s" % (prefix, key) if prefix else str(key)
            if key not in after:
                found.append("gone: %s = %s" % (where, json.dumps(before[key], sort_keys=True)[:200]))
            elif key not in before:
                found.append("new: %s = %s" % (where, json.dumps(after[key], sort_keys=True)[:200]))
            else:
                found.extend(differences(before[key], after[key], where))
    elif before != after:
        found.append("changed: %s: %s -> %s" % (prefix, json.dumps(before)[:200], json.dumps(after)[:200]))
    return found


def assert_unchanged(before, after, what=""):
    """Fail with the list of differences when the host changed."""
    changes = differences(before, after)
    assert not changes, "the host changed%s:\n  %s" % (" (%s)" % what if what else "", "\n  ".join(changes[:50]))


def machine_state(host, name):
    """`machinectl show NAME -p State --value`, or "" when no such machine runs."""
    done = host.run(["machinectl", "show", name, "-p", "State", "--value"])
    return done.stdout.strip() if done.returncode == 0 else ""


def run_checked(host, argv):
    """Run argv in the host; fail with its output when it fails."""
    done = host.run(argv)
    assert done.returncode == 0, "%s failed on %s (rc %d): %s %s" % (argv, host.name, done.returncode, done.stdout, done.stderr)
    return done.stdout


__all__ = ["SNAPSHOT_SCRIPT", "parse_snapshot", "host_snapshot", "differences", "assert_unchanged", "machine_state", "run_checked"]
