"""infra.render writes only where it may: a new or empty folder, or one it
rendered before, where it replaces its own files and nothing else.  Every
refusal leaves the folder exactly as it was."""

from __future__ import annotations

import shutil
import subprocess

import pytest
import yaml

from infra import render


def snapshot(folder) -> dict[str, bytes]:
    """Every file under `folder` (hidden ones too), by relative path."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def refused(folder, capsys, stack="dev") -> str:
    assert render.main(["--stack", stack, "--out", str(folder)]) == 2
    return capsys.readouterr().err


def marker(folder) -> dict:
    return yaml.safe_load((folder / render.MARKER).read_text())


def test_a_new_folder_gets_manifests_apart_from_pulumis_notes(tmp_path):
    out = tmp_path / "rendered" / "prod"
    written = render.write("prod", out)
    assert {p.parent.name for p in written} == {render.MANIFESTS, render.NOTES}
    assert sorted(marker(out)["files"]) == sorted(str(p.relative_to(out)) for p in written)
    assert set(snapshot(out)) == {render.MARKER, *marker(out)["files"]}


def test_a_checkout_like_folder_is_refused_and_left_as_it_was(tmp_path, capsys):
    # `--out .` in a checkout: before, the renderer deleted the folder, .git included.
    (tmp_path / ".git").mkdir()
    (tmp_path / ".git" / "HEAD").write_text("ref: refs/heads/main\n")
    (tmp_path / "README.md").write_text("mine\n")
    before = snapshot(tmp_path)
    error = refused(tmp_path, capsys)
    assert f"error: refusing to render into {tmp_path}: {tmp_path} is not empty and infra.render did not write it" \
        in error
    assert snapshot(tmp_path) == before


def test_a_file_is_refused(tmp_path, capsys):
    target = tmp_path / "out.yaml"
    target.write_text("kind: mine\n")
    assert "is not a folder" in refused(target, capsys)
    assert target.read_text() == "kind: mine\n"


def test_an_empty_folder_is_used(tmp_path):
    render.write("dev", tmp_path)
    assert (tmp_path / render.MARKER).is_file() and any((tmp_path / render.MANIFESTS).iterdir())


def test_a_second_render_replaces_its_own_files_keeps_others_and_removes_its_stale_ones(tmp_path):
    render.write("prod", tmp_path)
    mesh_files = {f for f in marker(tmp_path)["files"] if "virtualservice" in f}
    assert mesh_files
    (tmp_path / "NOTES.md").write_text("the operator's\n")
    (tmp_path / render.MANIFESTS / "zz-extra.yaml").write_text("kind: mine\n")
    render.write("dev", tmp_path)  # dev has no mesh: prod's mesh objects are gone from its render
    now = snapshot(tmp_path)
    assert not mesh_files & set(now)
    assert now["NOTES.md"] == b"the operator's\n"
    assert now[f"{render.MANIFESTS}/zz-extra.yaml"] == b"kind: mine\n"
    assert marker(tmp_path)["stack"] == "dev"
    assert set(now) == {render.MARKER, "NOTES.md", f"{render.MANIFESTS}/zz-extra.yaml", *marker(tmp_path)["files"]}


def test_a_file_in_the_way_that_it_did_not_write_is_refused(tmp_path, capsys):
    render.write("dev", tmp_path)
    first = sorted(marker(tmp_path)["files"])[0]
    listed = marker(tmp_path)
    listed["files"].remove(first)  # as if the operator had put that file there
    (tmp_path / render.MARKER).write_text(yaml.safe_dump(listed))
    before = snapshot(tmp_path)
    assert f"{tmp_path / first} is in the way and infra.render did not write it" in refused(tmp_path, capsys)
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize("listed", [["../victim.yaml"], ["README.md"], [f"{render.MANIFESTS}/../../victim.yaml"],
                                    "everything"])
def test_a_marker_listing_what_it_never_writes_is_refused(tmp_path, capsys, listed):
    out = tmp_path / "out"
    out.mkdir()
    (tmp_path / "victim.yaml").write_text("keep\n")
    (out / "README.md").write_text("keep\n")
    (out / render.MARKER).write_text(yaml.safe_dump({"stack": "dev", "files": listed}))
    before = snapshot(tmp_path)
    assert "does not list files infra.render writes" in refused(out, capsys)
    assert snapshot(tmp_path) == before


def test_a_stack_the_program_refuses_leaves_the_folder_alone(tmp_path, monkeypatch, capsys):
    render.write("dev", tmp_path)
    before = snapshot(tmp_path)
    original = render.offline.stack_config
    monkeypatch.setattr(render.offline, "stack_config", lambda stack, overrides=None: original(stack, {"cpuTarget": 0}))
    assert "config automata:cpuTarget" in refused(tmp_path, capsys)
    assert snapshot(tmp_path) == before


@pytest.mark.skipif(not shutil.which("kubectl"), reason="kubectl is not installed")
def test_kubectl_reads_every_file_of_the_manifest_folder_as_an_object(tmp_path):
    # kustomize parses each file as a Kubernetes resource (apiVersion, kind,
    # metadata.name) offline, as `kubectl apply -f` would before sending it.
    render.write("prod", tmp_path / "out")
    kustomization = tmp_path / "k"
    shutil.copytree(tmp_path / "out" / render.MANIFESTS, kustomization)
    files = sorted(p.name for p in kustomization.iterdir())
    (kustomization / "kustomization.yaml").write_text(yaml.safe_dump({"resources": files}))
    built = subprocess.run(["kubectl", "kustomize", str(kustomization)], capture_output=True, text=True, timeout=60)
    assert built.returncode == 0, built.stderr
    assert len([d for d in yaml.safe_load_all(built.stdout) if d]) == len(files)
