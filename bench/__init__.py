"""Benchmarks of the hot paths. They print figures (with a baseline from the same run); they assert nothing."""
