"""The JAX sampler conformance check: grid, inputs, reference, sweep, report and storage."""
