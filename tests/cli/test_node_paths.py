"""Where the CLI looks on a node (NGINX tree, HAProxy configuration, the
runtime API socket) is what the inventory gives the roles, else the roles'
own defaults: an inventory that moves the admin socket moves it for the CLI
too."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from automata_lb import edge, targets

ROOT = targets.ROOT
SEED = ROOT / "inventories" / "lab"
GROUP_VARS = Path("group_vars") / "edge" / "main.yml"


def _inventory(tmp_path: Path, **variables) -> Path:
    copy = tmp_path / "inventory"
    shutil.copytree(SEED, copy)
    if variables:
        with (copy / GROUP_VARS).open("a") as f:
            f.write(yaml.safe_dump(variables))
    return copy


def test_without_a_word_from_the_inventory_the_roles_defaults_hold(tmp_path):
    (node, *_) = targets.inventory(_inventory(tmp_path)).edges
    nginx = yaml.safe_load((ROOT / "roles/nginx_lb/defaults/main.yml").read_text())
    haproxy = yaml.safe_load((ROOT / "roles/haproxy_lb/defaults/main.yml").read_text())
    assert node.paths.nginx_conf_dir == nginx["nginx_lb_conf_dir"]
    assert node.paths.nginx_staging_dir == nginx["nginx_lb_conf_dir"] + "/staging"
    assert node.paths.haproxy_config == haproxy["haproxy_lb_config_dir"] + "/haproxy.cfg"
    assert node.paths.haproxy_socket == haproxy["haproxy_lb_admin_socket"]


def test_the_inventorys_paths_are_the_clis(tmp_path):
    inventory = _inventory(tmp_path, haproxy_lb_admin_socket="/run/haproxy/api.sock", nginx_lb_conf_dir="/srv/nginx")
    for node in targets.inventory(inventory).edges:
        assert node.paths.haproxy_socket == "/run/haproxy/api.sock"
        assert (node.paths.nginx_conf_dir, node.paths.nginx_staging_dir) == ("/srv/nginx", "/srv/nginx/staging")


@pytest.mark.parametrize(("name", "value"), [("haproxy_lb_admin_socket", "{{ socket_dir }}/admin.sock"),
                                             ("nginx_lb_conf_dir", "etc/nginx")])
def test_a_path_the_cli_cannot_read_as_is_is_refused_by_name(tmp_path, name, value):
    with pytest.raises(targets.TargetError, match=name):
        targets.inventory(_inventory(tmp_path, **{name: value}))


def test_the_probe_reads_the_nodes_own_tree(tmp_path):
    """The probe, run here as edge.py ships it, finds the canary share in the
    NGINX tree it was pointed at.  It runs as on a node: the standard library
    alone (-S: no site-packages, -I: not this checkout), so a node part that
    needs anything else fails here."""
    tree = tmp_path / "nginx"
    (tree / "conf.d").mkdir(parents=True)
    (tree / "conf.d" / "canary.conf").write_text("split_clients $request_id $pool {\n    17% canary;\n    * stable;\n}\n")
    node = targets.EdgeNode("here", "127.0.0.1", paths=targets.NodePaths(
        str(tree), str(tree / "staging"), str(tmp_path / "haproxy"), str(tmp_path / "no.sock")))
    script = edge.script({"paths": edge._paths(node), "ops": [op.request() for op in edge.PROBE]})
    out = subprocess.run([sys.executable, "-I", "-S", "-"], input=script, capture_output=True, text=True, timeout=60,
                         cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["nginx"]["canary_share"] == 17
