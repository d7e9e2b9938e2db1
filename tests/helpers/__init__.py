"""Test helpers shared by several test packages, one module per concern (stand-in detectors,
encoded test images). Fixtures live in the ``conftest.py`` files."""
