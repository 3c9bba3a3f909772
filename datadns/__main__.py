"""``python -m datadns``: the datadns command line (datadns.cli)."""

from .cli import main

main()
