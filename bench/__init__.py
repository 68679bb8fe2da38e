"""Benchmarks of the compute agent against the floor and against what users would use
instead, measured in the same run on the same machine. Never tests: nothing here fails
on a slow number. `python -m bench --help`."""
