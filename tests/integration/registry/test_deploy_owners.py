"""deploy/podman/owners.py (the compose file's one-shot `owners` service) against a real
registry API on real PostgreSQL: owners made once, tokens kept, a lost token said plainly."""

from __future__ import annotations

import asyncio
import importlib.util
import stat
from pathlib import Path

import pytest
from test_registry_service import configure

pytestmark = pytest.mark.integration

SCRIPT = Path(__file__).resolve().parents[3] / "deploy" / "podman" / "owners.py"
spec = importlib.util.spec_from_file_location("podman_owners", SCRIPT)
assert spec is not None and spec.loader is not None
owners_script = importlib.util.module_from_spec(spec)
spec.loader.exec_module(owners_script)


@pytest.fixture
def admin_token(runtime, tmp_path: Path) -> Path:
    configure(runtime, admin_token="admin-secret")
    path = tmp_path / "registry-admin-token"
    path.write_text("admin-secret\n")
    return path


async def run_owners(client, admin_token: Path, *specs: str) -> int:
    """The script's main, in a thread: its urllib calls must not block the server's loop."""
    url = str(client.make_url("")).rstrip("/")
    argv = ["--registry", url, "--admin-token-file", str(admin_token), *specs]
    return await asyncio.to_thread(owners_script.main, argv)


async def whoami(client, token: str) -> str:
    reply = await client.get("/api/v1/owners/whoami", headers={"Authorization": f"Bearer {token}"})
    assert reply.status == 200, await reply.text()
    return (await reply.json())["owner"]


async def test_owners_are_made_once_and_their_tokens_kept(
    client, admin_token: Path, tmp_path: Path, capsys
) -> None:
    farm, volunteer = tmp_path / "farm", tmp_path / "volunteer"
    farm.mkdir()
    volunteer.mkdir()
    specs = (f"farm:{farm}", f"volunteer:{volunteer}")
    assert await run_owners(client, admin_token, *specs) == 0
    tokens = {
        name: (folder / name).read_text().strip()
        for name, folder in (("farm", farm), ("volunteer", volunteer))
    }
    for name, token in tokens.items():
        assert await whoami(client, token) == name
    assert stat.S_IMODE((farm / "farm").stat().st_mode) == 0o600
    assert sorted(p.name for p in farm.iterdir()) == ["farm"]  # no temporary file left

    # Every `up` runs it again: the tokens the registry knows stay as they are.
    assert await run_owners(client, admin_token, *specs) == 0
    assert (farm / "farm").read_text().strip() == tokens["farm"]
    assert (volunteer / "volunteer").read_text().strip() == tokens["volunteer"]
    assert "owner farm: token kept" in capsys.readouterr().out


async def test_a_token_the_registry_does_not_know_is_replaced(
    client, admin_token: Path, tmp_path: Path
) -> None:
    """A token volume that outlived the database: the owner is made again."""
    (tmp_path / "farm").write_text("x" * 43 + "\n")
    assert await run_owners(client, admin_token, f"farm:{tmp_path}") == 0
    assert await whoami(client, (tmp_path / "farm").read_text().strip()) == "farm"


async def test_an_owner_whose_token_is_lost_is_an_error_saying_what_to_do(
    client, admin_token: Path, tmp_path: Path, capsys
) -> None:
    assert await run_owners(client, admin_token, f"farm:{tmp_path}") == 0
    (tmp_path / "farm").unlink()
    assert await run_owners(client, admin_token, f"farm:{tmp_path}") == 1
    err = capsys.readouterr().err
    assert "owner farm exists but its token is not in" in err and "revoke" in err
    assert not (tmp_path / "farm").exists()


async def test_a_wrong_admin_token_fails_at_once(client, admin_token: Path, tmp_path: Path) -> None:
    admin_token.write_text("not-the-admin-token\n")
    assert await run_owners(client, admin_token, f"farm:{tmp_path}") == 1
    assert not (tmp_path / "farm").exists()
