"""What runs ON an edge node: each load balancer's side of the CLI's reads
and changes, shipped over SSH as one script (`shipped.script`).

The node has the python3 Ansible uses and nothing else, so these modules
use the standard library alone and import nothing from the controller; the
controller imports them freely (`haproxy.stat_rows` parses `show stat`
there too).  One module per thing on the node:

- system.py: files, the staged-then-live writes, services and their workers;
- nginx.py: NGINX's tree (the canary file, the pools), checked by `nginx -t`,
  live through a reload that returns once only new workers accept;
- haproxy.py: the runtime API client and haproxy.cfg, checked by `haproxy -c`;
- keepalived.py: the VRRP state and the floating addresses the node holds;
- main.py: runs the operations the controller sends, prints one JSON line.
"""
