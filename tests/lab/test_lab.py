"""The lab itself: its description, its inventory and its backends agree."""

from __future__ import annotations

import subprocess

import httpx
import yaml

from labkit import INVENTORY, LAB_GROUP_VARS


def test_inventory_matches_the_lab_description(lab):
    hosts = yaml.safe_load(INVENTORY.read_text())["all"]["children"]["edge"]["hosts"]
    assert {name: h["ansible_host"] for name, h in hosts.items()} == \
        {e["name"]: e["address"] for e in lab["edges"]}
    group_vars = yaml.safe_load(LAB_GROUP_VARS.read_text())
    listed = group_vars["edge_backends"] + group_vars["edge_canary_backends"]
    assert {b["name"]: b["address"] for b in listed} == \
        {b["name"]: b["address"] for b in lab["backends"]}
    assert [a.split("/")[0] for a in group_vars["edge_vip_addresses"]] == [lab["vip"]["address"]]


def test_every_backend_answers_as_itself(lab):
    for backend in lab["backends"]:
        r = httpx.get(f"{backend['endpoints']['app']}/api/whoami", timeout=5)
        assert r.status_code == 200
        assert r.headers["x-backend-instance"] == backend["name"]
        assert r.headers["x-backend-version"] == backend["version"]


def test_published_ports_listen_on_loopback_only(lab):
    # Every endpoint the lab publishes is a 127.0.0.1 URL; nothing binds 0.0.0.0.
    urls = [u for e in lab["edges"] for u in e["endpoints"].values()]
    urls += [u for b in lab["backends"] for u in b["endpoints"].values()]
    assert urls and all(httpx.URL(u).host == "127.0.0.1" for u in urls)
    listening = subprocess.run(["ss", "-Htln"], capture_output=True, text=True).stdout
    ports = {httpx.URL(u).port for u in urls}
    exposed = [line for line in listening.splitlines()
               if any(line.split()[3] in (f"0.0.0.0:{p}", f"*:{p}", f"[::]:{p}") for p in ports)]
    assert not exposed, exposed
