"""What `skyline host cloud-init` and `skyline host container` print, parsed back as a VM's
cloud-init and a shell would read it."""

from __future__ import annotations

import shlex

import pytest
import yaml

from services.cli import cloudinit

KEYS = ["ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIJ7 admin@example.org", "ssh-rsa AAAAB3Nz root@x"]


def vm(**changes: object) -> cloudinit.VolunteerVM:
    fields: dict[str, object] = {
        "registry_url": "https://registry.example.org",
        "owner_token": "tok-123",
        "admin_ssh_keys": KEYS,
    }
    fields.update(changes)
    return cloudinit.VolunteerVM(**fields)  # type: ignore[arg-type]


@pytest.mark.parametrize("distro", cloudinit.DISTROS)
def test_rendered_yaml_is_the_data(distro: str) -> None:
    data = cloudinit.user_data(vm(distro=distro, enrol_token="farm-secret", slots=3))
    text = cloudinit.render(data)
    assert text.startswith("#cloud-config\n")
    assert yaml.safe_load(text) == data


def _file(data: dict, path: str) -> dict:
    return next(f for f in data["write_files"] if f["path"] == path)


def test_fedora_vm_admins_updates_enrolment_and_service() -> None:
    data = yaml.safe_load(cloudinit.render(cloudinit.user_data(vm())))
    admin = next(u for u in data["users"] if isinstance(u, dict) and u["name"] == "skyline-admin")
    assert admin["ssh_authorized_keys"] == KEYS
    assert "dnf-automatic" in data["packages"]
    assert "apply_updates = yes" in _file(data, "/etc/dnf/automatic.conf")["content"]
    token = _file(data, "/etc/skyline/owner-token")
    assert token["permissions"] == "0600" and token["content"].strip() == "tok-123"
    unit = _file(data, "/etc/systemd/system/skyline-builder.service")["content"]
    assert "ExecStart=/opt/skyline/bin/skyline-builder --conf /etc/skyline/builder.toml" in unit
    assert "User=skyline-builder" in unit
    cmds = data["runcmd"]
    enroll = next(c for c in cmds if " host enroll " in c)
    argv = shlex.split(enroll)
    assert argv[:3] == ["runuser", "-u", "skyline-builder"]
    assert "SKYLINE_OWNER_TOKEN_FILE=/etc/skyline/owner-token" in argv
    assert argv[argv.index("--registry") + 1] == "https://registry.example.org"
    assert argv[argv.index("--out") + 1] == "/etc/skyline/builder.toml"
    assert "tok-123" not in enroll  # the token is read from its file, not a command line
    # The token is gone once enrolled; the service starts last.
    assert cmds.index(enroll) < cmds.index("shred -u /etc/skyline/owner-token")
    assert cmds[-1] == "systemctl enable --now skyline-builder.service"
    assert any("dnf-automatic.timer" in c for c in cmds)


def test_debian_vm_uses_unattended_upgrades() -> None:
    data = yaml.safe_load(cloudinit.render(cloudinit.user_data(vm(distro="debian"))))
    assert "unattended-upgrades" in data["packages"]
    periodic = _file(data, "/etc/apt/apt.conf.d/20auto-upgrades")["content"]
    assert 'APT::Periodic::Unattended-Upgrade "1";' in periodic
    admin = next(u for u in data["users"] if isinstance(u, dict) and u["name"] == "skyline-admin")
    assert admin["groups"] == "sudo"


def test_unknown_distro_is_refused() -> None:
    with pytest.raises(ValueError, match="distro must be one of"):
        cloudinit.user_data(vm(distro="plan9"))


def test_awkward_strings_survive_yaml() -> None:
    data = cloudinit.user_data(vm(owner_token='a"b\\c: #d', package="git+https://x/y.git#egg=z"))
    assert yaml.safe_load(cloudinit.render(data)) == data


def test_podman_line_enrols_once_then_runs_the_builder() -> None:
    line = cloudinit.podman_line("https://registry.example.org", slots=2)
    argv = shlex.split(line)
    assert argv[:3] == ["podman", "run", "-d"]
    assert "--restart=always" in argv
    assert argv[argv.index("-e") + 1] == "SKYLINE_OWNER_TOKEN"  # from the caller's environment
    assert argv[argv.index("-v") + 1] == "skyline-builder:/var/lib/skyline-builder"
    assert argv[-3:-1] == ["sh", "-c"]
    script = argv[-1]
    check, enroll, rest = script.split(" || ")
    assert check == "test -f /var/lib/skyline-builder/builder.toml"
    stop, start = rest.split("; ")
    assert stop == "exit 1"
    enroll_argv = shlex.split(enroll)
    assert enroll_argv[:3] == ["skyline", "host", "enroll"]
    assert enroll_argv[enroll_argv.index("--slots") + 1] == "2"
    assert start == "exec skyline-builder --conf /var/lib/skyline-builder/builder.toml"
