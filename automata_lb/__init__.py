"""automata-lb: see, scale, roll and roll back the load-balancing tier (docs/operations.md)."""

import sys
from pathlib import Path

# The CLI acts on this checkout (its inventories, stacks, lab) and imports its
# other packages (infra, lab, monitoring, traffic) from it, wherever it runs.
_ROOT = str(Path(__file__).resolve().parent.parent)
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)
