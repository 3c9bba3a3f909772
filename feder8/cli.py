"""feder8's command line (filled in by the federation work)."""

import click


@click.group()
def main():
    """Register this site's datasets with a central Data DNS resolver."""
