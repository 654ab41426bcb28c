"""Smoke test of the lab, on every release: Ansible reaches the host over real SSH, facts
say systemd, and the machinectl/importctl steps of a sidecar work inside it
(tests/integration/targets/smoke)."""

PULL_TASKS = ("Pull the fixture image with importctl (systemd >= 256)", "Pull the fixture image with machinectl (systemd < 256)")


def test_smoke(lab_host, ansible_runner):
    result = ansible_runner.run_target("smoke", limit=lab_host.name)

    assert result.rc == 0, result
    assert not result.failed, result
    assert result.stats[lab_host.name]["failures"] == 0, result
    facts = result.result("Gathering Facts", lab_host.name)["ansible_facts"]
    assert facts["ansible_service_mgr"] == "systemd"
    assert facts["ansible_hostname"] == lab_host.name
    assert facts["ansible_distribution"] == "Debian"
    if lab_host.release.major:
        assert facts["ansible_distribution_major_version"] == lab_host.release.major
    else:  # Debian unstable: "<next codename>/sid" ("forky/sid" when measured)
        assert facts["ansible_distribution_major_version"].endswith("/sid"), facts["ansible_distribution_major_version"]
    assert result.result("Remember whether importd is installed", lab_host.name)["ansible_facts"]["smoke_importd"] == lab_host.importd
    assert result.result("Run a command that exits 3 in the machine", lab_host.name)["rc"] == 3
    pulled_with = {record["result"]["cmd"][0] for task in PULL_TASKS for record in result.results(task, lab_host.name)
                   if record["status"] == "changed"}
    if lab_host.importd:
        assert pulled_with == ({"importctl"} if lab_host.systemd_version >= 256 else {"machinectl"})
    else:
        # No importd: machinectl pull-tar failed for want of it, the image was unpacked by hand.
        assert pulled_with == set()
        assert "org.freedesktop.import1" in result.result("Try to pull with machinectl where importd is missing", lab_host.name)["stderr"]
        assert result.result("Unpack the fixture image into the image store where importd is missing", lab_host.name)["changed"]
