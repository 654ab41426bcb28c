"""Command line of the lab: `PYTHONPATH=tests python -m lab COMMAND` (as root).

    build [--force] [--release R]        build what the recipes need (prints timings)
    up [--name N] [--release 12] [--release 12-noimportd] [--count K] [--replace]
                                         boot hosts, print seconds to SSH-ready and how to reach them
    down [--name N | --all [--prefix P] [--run-id ID]]
                                         stop and remove a lab (--all: every lab, and debris of killed runs;
                                         --run-id: only labs started with NSPAWN_LAB_RUN_ID=ID)
    status [--name N] [--json]           labs, hosts, PIDs
    inventory [--name N]                 print the path of a lab's inventory
    ssh HOST [COMMAND...]                log into a lab host (or run a command) over real SSH
    reboot HOST                          reboot a lab host, wait until SSH answers again
"""

import argparse
import json
import os
import signal
import sys

from . import images
from .build import Builder, BuildError
from .host import HostError
from .lab import Lab, LabError


def main(argv=None):
    parser = _parser()
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        print("the lab needs root (systemd-nspawn, mounts, cgroups)", file=sys.stderr)
        return 2
    # SIGTERM (a cancelled CI job) unwinds like Ctrl-C: a build removes its temporary
    # directory, an `up` downs the hosts it started.
    signal.signal(signal.SIGTERM, _raise_keyboard_interrupt)
    try:
        return args.command(args)
    except (BuildError, HostError, LabError, OSError, ValueError) as error:
        print("error: %s" % error, file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


def _raise_keyboard_interrupt(signum, frame):
    raise KeyboardInterrupt("SIGTERM")


def _parser():
    parser = argparse.ArgumentParser(prog="python -m lab", description="nspawn.nixos test lab: Debian hosts booted with systemd-nspawn.")
    commands = parser.add_subparsers(required=True, metavar="COMMAND")

    build = commands.add_parser("build", help="build root file systems and the fixture image (cached)")
    build.add_argument("--force", action="store_true", help="rebuild even what is cached")
    build.add_argument("--release", action="append", choices=list(images.RELEASES), help="only these releases (default: all)")
    build.set_defaults(command=cmd_build)

    up = commands.add_parser("up", help="boot a lab")
    up.add_argument("--name", default="lab")
    up.add_argument("--release", action="append", choices=list(images.RELEASES),
                    help="lab release, repeatable (default: %s)" % " and ".join(images.DEFAULT_RELEASES))
    up.add_argument("--count", type=int, default=1, help="hosts per release (default 1)")
    up.add_argument("--replace", action="store_true", help="down an existing lab of that name first")
    up.set_defaults(command=cmd_up)

    down = commands.add_parser("down", help="stop and remove a lab")
    which = down.add_mutually_exclusive_group()
    which.add_argument("--name", default="lab")
    which.add_argument("--all", action="store_true", help="every lab under the state root, and debris of killed runs")
    down.add_argument("--prefix", action="append", help="with --all: only labs whose name starts with this (repeatable)")
    down.add_argument("--run-id", help="with --all: only labs started with NSPAWN_LAB_RUN_ID set to this")
    down.set_defaults(command=cmd_down)

    status = commands.add_parser("status", help="show labs and hosts")
    status.add_argument("--name", help="one lab (default: all)")
    status.add_argument("--json", action="store_true", help="print lab.json with current PIDs")
    status.set_defaults(command=cmd_status)

    inventory = commands.add_parser("inventory", help="print the path of a lab's inventory")
    inventory.add_argument("--name", default="lab")
    inventory.set_defaults(command=cmd_inventory)

    ssh = commands.add_parser("ssh", help="ssh into a lab host")
    ssh.add_argument("host")
    ssh.add_argument("remote_command", nargs=argparse.REMAINDER)
    ssh.set_defaults(command=cmd_ssh)

    reboot = commands.add_parser("reboot", help="reboot a lab host")
    reboot.add_argument("host")
    reboot.set_defaults(command=cmd_reboot)
    return parser


def cmd_build(args):
    artifacts = Builder(force=args.force).ensure(args.release)
    if artifacts.timings:
        print("build timings (debootstraps run in parallel):")
        for step, seconds in artifacts.timings.items():
            print("  %-28s %7.1f s" % (step, seconds))
    else:
        print("cache is up to date")
    for version, root in sorted(artifacts.host_roots.items()):
        print("%s rootfs: %s" % (images.release(version).name, root))
    print("fixture images: %s" % artifacts.images_dir)
    return 0


def cmd_up(args):
    lab = Lab(args.name).up(releases=args.release or images.DEFAULT_RELEASES, count=args.count, replace=args.replace)
    seconds = lab.seconds
    print("lab %s: %d host(s) SSH-ready %.1f s after boot started (build check %.1f s)" % (lab.name, len(lab.hosts), seconds["boot"], seconds["build"]))
    for host in lab.hosts:
        print("  %-32s systemd %d: running after %.1f s, SSH after %.1f s (%s root)"
              % (host.name, host.systemd_version, host.boot_seconds["running"], host.boot_seconds["ssh"], host.root_mode))
    print("inventory:  %s" % lab.inventory)
    print("ssh:        PYTHONPATH=tests python -m lab ssh %s   (or: ssh -F %s %s)" % (lab.hosts[0].name, lab.ssh_config, lab.hosts[0].name))
    print("ansible:    ansible -i %s sidecar_hosts -m ping" % lab.inventory)
    print("down:       PYTHONPATH=tests python -m lab down --name %s" % lab.name)
    return 0


def cmd_down(args):
    if args.all:
        names = Lab.down_all(prefixes=args.prefix, run_id=args.run_id)
        print("removed: %s" % (", ".join(names) or "no lab (swept leftovers)"))
        return 0
    lab = Lab(args.name)
    if not lab.exists():
        print("no lab %s" % args.name)
        return 0
    lab.down()
    print("removed lab %s" % args.name)
    return 0


def cmd_status(args):
    names = [args.name] if args.name else Lab.names()
    if not names:
        print("no labs")
    for name in names:
        try:
            lab = Lab.load(name)
        except LabError as error:
            print("lab %s: %s; remove it with `python -m lab down --name %s`" % (name, error, name))
            continue
        if args.json:
            print(json.dumps(lab.describe(), indent=2))
            continue
        print("lab %s  (%s)" % (lab.name, lab.inventory))
        for host in lab.hosts:
            leader = host.leader_pid(required=False)
            state = host.run(["systemctl", "is-system-running"], timeout=10).stdout.strip() if leader else "stopped"
            print("  %-32s systemd %d  %-9s supervisor %s leader %s" % (
                host.name, host.systemd_version, state, host.supervisor_pid(), leader))
    return 0


def cmd_inventory(args):
    lab = Lab.load(args.name)
    print(lab.inventory)
    return 0


def cmd_ssh(args):
    _lab, host = Lab.find_host(args.host)
    argv = ["ssh", *host.ssh_args, "root@" + host.name]
    if args.remote_command:
        argv.append(" ".join(args.remote_command))
    os.execvp("ssh", argv)
    return 0  # not reached


def cmd_reboot(args):
    lab, host = Lab.find_host(args.host)
    old_leader = host.leader_pid()
    seconds = lab.reboot(host.name)
    print("%s rebooted: leader %d -> %d, SSH answers again after %.1f s" % (host.name, old_leader, host.leader_pid(), seconds))
    return 0
