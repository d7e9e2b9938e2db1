"""Test helpers shared by several test packages, one module per concern: stand-in detectors,
encoded test images, networks with BatchNorm statistics, waiting for a stage to come idle.
Fixtures live in the ``conftest.py`` files."""
