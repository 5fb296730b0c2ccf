"""Probing: the probe catalog, providers (one module per API), cell limits, the runner and the scheduler."""
