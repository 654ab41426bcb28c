"""An image on the host without an origin record - as an interrupted run (or a hand import) leaves it - is
reported as such, changed by nothing, and adopted on request with its data kept.

The image is pulled by hand with importd (machinectl pull-tar / importctl pull-tar), which is what a
run interrupted between importd's transfer and the module's record leaves behind.
"""

import json

from lab import images
from lab.lab import IMAGE_SERVER

NAME = "adopted"


def role_play(**extra):
    values = {"sidecar_name": NAME, "sidecar_image_url": "{{ lab_image_url }}", "sidecar_image_checksum": "{{ lab_image_sha256 }}"}
    values.update(extra)
    return [{"name": "sidecar", "hosts": "sidecar_hosts", "gather_facts": False,
             "roles": [{"role": "nspawn.nixos.sidecar", "vars": values}]}]


def test_an_image_without_record_is_reported_then_adopted_with_its_data(lab_host, ansible_runner):
    host = lab_host.name
    url = IMAGE_SERVER + images.FIXTURE_IMAGE_FILES[0]  # lab_image_url of the inventory
    pull = (["importctl", "pull-tar", "--class=machine", "-q", url, NAME, "--verify=no"] if lab_host.systemd_version >= 256
            else ["machinectl", "pull-tar", url, NAME, "--verify=no"])
    try:
        lab_host.run(pull, check=True, timeout=300)
        lab_host.run(["sh", "-c", "echo kept > /var/lib/machines/%s/root/data-written-by-the-machine" % NAME], check=True)
        assert lab_host.run(["test", "-e", "/var/lib/nspawn-nixos/origin/%s.json" % NAME]).returncode != 0

        reported = ansible_runner.playbook(role_play(), limit=host)
        assert reported.rc == 0, str(reported)
        plan = reported.result("Check whether the image must be fetched", host)
        assert any("has no origin record" in warning and "adopt: true" in warning for warning in plan["warnings"]), plan
        assert reported.results("Fetch, verify and import the image", host)[-1]["status"] == "skipped"
        assert lab_host.run(["test", "-e", "/var/lib/nspawn-nixos/origin/%s.json" % NAME]).returncode != 0

        adopted = ansible_runner.playbook(role_play(sidecar_image_adopt=True), limit=host)
        assert adopted.rc == 0, str(adopted)
        result = adopted.result("Fetch, verify and import the image", host)
        assert result["changed"] and result["actions"] == ["record_origin"], result
        record = json.loads(lab_host.run(["cat", "/var/lib/nspawn-nixos/origin/%s.json" % NAME], check=True).stdout)
        assert record["method"] == "adopt" and record["url"] == url, record
        data = lab_host.run(["cat", "/var/lib/machines/%s/root/data-written-by-the-machine" % NAME], check=True).stdout
        assert data == "kept\n"

        again = ansible_runner.playbook(role_play(sidecar_image_adopt=True), limit=host)
        assert again.rc == 0 and again.stats[host]["changed"] == 0, str(again)
    finally:
        gone = ansible_runner.playbook(role_play(sidecar_state="absent"), limit=host)
        assert gone.rc == 0, str(gone)
