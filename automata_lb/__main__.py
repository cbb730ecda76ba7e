"""python -m automata_lb: the same as the `automata-lb` console script."""

from automata_lb.cli import run

run()
