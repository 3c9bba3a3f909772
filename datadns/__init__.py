"""The embedded stack: run SecantusDB, Girder with the plugin, and feder8 on one machine.

Used by ``datadns up`` (the README's first command), by the tests and by the
benchmarks, so all three start processes the same way.
"""
