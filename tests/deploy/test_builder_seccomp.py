"""deploy/podman/seccomp-builder.json: podman's default seccomp profile plus only what the
build sandbox needs (sethostname/setdomainname for bwrap --hostname), no podman needed."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

DEPLOY = Path(__file__).resolve().parents[2] / "deploy" / "podman"
PROFILE = json.loads((DEPLOY / "seccomp-builder.json").read_text())
ADDED = {"sethostname", "setdomainname"}
# Gated on CAP_SYS_ADMIN in podman's default profile, and still so here.
STILL_GATED = {"bpf", "fanotify_init", "lookup_dcookie", "perf_event_open", "quotactl"}
# Never allowed by the default profile (nor here), whatever the capabilities.
NEVER = {"kexec_load", "init_module", "finit_module", "delete_module", "open_by_handle_at"}


def unconditional(action: str) -> set[str]:
    return {
        name
        for rule in PROFILE["syscalls"]
        if rule["action"] == action and not rule.get("includes") and not rule.get("excludes")
        if not rule.get("args")
        for name in rule["names"]
    }


def test_denies_by_default() -> None:
    assert PROFILE["defaultAction"] == "SCMP_ACT_ERRNO"


def test_the_sandbox_calls_are_allowed_to_everyone() -> None:
    # bwrap makes its namespaces and mounts without any capability of the container's.
    assert ADDED | {"unshare", "clone", "mount", "pivot_root", "umount2"} <= unconditional(
        "SCMP_ACT_ALLOW"
    )


def test_nothing_else_is_loosened() -> None:
    allowed = unconditional("SCMP_ACT_ALLOW")
    assert not (STILL_GATED | NEVER) & allowed
    gated = [
        r for r in PROFILE["syscalls"] if r.get("includes", {}).get("caps") == ["CAP_SYS_ADMIN"]
    ]
    assert any(STILL_GATED <= set(r["names"]) for r in gated)
    # The added names appear in the one unconditional rule only: no gated rule contradicts it.
    rules = [r for r in PROFILE["syscalls"] if ADDED & set(r["names"])]
    assert len(rules) == 1 and set(rules[0]["names"]) == ADDED


def test_the_builders_use_it() -> None:
    compose = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    for name in ("builder", "volunteer"):
        service = compose["services"][name]
        assert set(service["security_opt"]) == {
            "unmask=/proc/*",
            "seccomp=./seccomp-builder.json",
            "no-new-privileges",
        }, name
        env = service.get("environment", {})
        assert "SKYLINE_BUILDER_ALLOW_UNSANDBOXED" not in env, name
