"""Benchmarks of bezier_kernels (docs/spec.md section 6). Not collected by the test run."""
