"""The asv benchmark suite of pixelkm (see ../asv.conf.json and docs/benchmarks.md)."""
