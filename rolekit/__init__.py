"""Python the Ansible roles share, imported by path from their filter
plugins as they import the `traffic` package (docs/decisions.md, D5)."""
