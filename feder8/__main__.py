"""``python -m feder8``: the feder8 command line (feder8.cli)."""

from .cli import main

main()
