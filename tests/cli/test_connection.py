"""The CLI reaches an inventory's nodes with the inventory's own connection
settings: its user, become through sudo (as the playbook does), and its
Vault-encrypted variables decrypted with the password file an operator
gives.  What it cannot do the way the playbook would is refused by name."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from automata_lb import cli, targets

SEED = targets.ROOT / "inventories" / "lab"
GROUP_VARS = Path("group_vars") / "edge"


def _inventory(tmp_path: Path, text: str) -> Path:
    copy = tmp_path / "inventory"
    shutil.copytree(SEED, copy)
    (copy / GROUP_VARS / "connection.yml").write_text(text)
    return copy


def test_a_become_inventory_runs_node_commands_through_sudo(tmp_path):
    inventory = _inventory(tmp_path, "ansible_user: deploy\nansible_become: yes\n")
    for node in targets.inventory(inventory).edges:
        argv = node.ssh_argv("echo 'show stat' | socat stdio UNIX-CONNECT:/run/haproxy/admin.sock")
        # The whole line under sudo, the pipeline's second command too.
        assert argv[-2:] == [f"deploy@{node.address}",
                             "sudo -n -- sh -c 'echo '\"'\"'show stat'\"'\"' | socat stdio UNIX-CONNECT:/run/haproxy/admin.sock'"]


def test_without_become_commands_run_as_the_user(tmp_path):
    inventory = _inventory(tmp_path, "ansible_user: deploy\n")
    (node, *_) = targets.inventory(inventory).edges
    assert node.ssh_argv("id")[-2:] == [f"deploy@{node.address}", "id"]


@pytest.mark.parametrize(("line", "named"), [("ansible_become_method: su", "ansible_become_method"),
                                             ("ansible_become_user: haproxy", "ansible_become_user")])
def test_a_become_the_cli_cannot_do_is_refused_by_name(tmp_path, line, named):
    inventory = _inventory(tmp_path, f"ansible_user: deploy\nansible_become: true\n{line}\n")
    with pytest.raises(targets.TargetError, match=named):
        targets.inventory(inventory)


def test_a_vaulted_inventory_needs_its_password_and_reads_with_it(tmp_path, monkeypatch):
    inventory = _inventory(tmp_path, "ansible_user: deploy\n")
    password = tmp_path / "vault-pass"
    password.write_text("correct horse battery staple\n")
    vault = inventory / GROUP_VARS / "vault.yml"
    vault.write_text("vault_haproxy_stats_password: s3cret\n")
    subprocess.run([str(Path(sys.executable).parent / "ansible-vault"), "encrypt", "--vault-password-file",
                    str(password), str(vault)], check=True, capture_output=True)
    monkeypatch.delenv("ANSIBLE_VAULT_PASSWORD_FILE", raising=False)
    with pytest.raises(targets.TargetError, match=r"(?i)vault"):
        targets.inventory(inventory)
    monkeypatch.setenv("ANSIBLE_VAULT_PASSWORD_FILE", str(password))
    assert [n.user for n in targets.inventory(inventory).edges] == ["deploy", "deploy"]


def test_a_vault_password_file_that_is_not_there_is_refused_before_anything(tmp_path):
    result = CliRunner().invoke(cli.app, ["--vault-password-file", str(tmp_path / "nowhere"), "status"])
    assert result.exit_code == 2
    assert "--vault-password-file" in result.output


def test_auto_scale_on_an_inventory_is_refused_naming_it(tmp_path):
    # The autoscaler runs for the lab; VMs scale by command, pods by their HPAs.
    inventory = _inventory(tmp_path, "ansible_user: deploy\n")
    result = CliRunner().invoke(cli.app, ["--inventory", str(inventory), "auto-scale", "--duration", "5"])
    assert result.exit_code == 2
    assert str(inventory) in result.output and "the autoscaler runs for the lab" in result.output
