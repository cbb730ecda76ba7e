"""The local lab: an ephemeral edge stack on Podman (docs/lab.md)."""
