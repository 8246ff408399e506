"""Benchmarks of bezier_kernels (SPEC section 6). Not collected by the test run."""
