"""Benchmarks: figures printed side by side in one run, as ratios, never asserted by a test.

    python -m benchmarks                  # the list
    python -m benchmarks NAME --help      # one benchmark's options and what it measures

Run from the checkout (they import lits as a package, and benchmarks/ itself from the working directory). Every
benchmark prints the CPU model and its vector extensions with its figures: on 2 cores, the same words "AMD EPYC" have
meant 38 and 122 samples/s. Run them alone on the machine: a second job takes a core, and torch's OpenMP threads then
slow down 5-10x, not 2x.
"""
