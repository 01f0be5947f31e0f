"""The benchmarks (not tests): each module is a library that the tests exercise and a command,
`python -m gradshield_research.bench.NAME`. Their results are recorded in bench/QUALITY.md and the README."""
