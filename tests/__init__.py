"""The test suite; a package so that its support code imports as ``tests.support`` (tests and benches alike)."""
