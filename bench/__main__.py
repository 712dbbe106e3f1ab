"""`python -m bench [--quick]`: run the benchmark and write bench/RESULTS.md."""

from bench.run import main

main()
