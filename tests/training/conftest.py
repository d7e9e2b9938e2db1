"""Fixtures shared by the tests of `training/` (tests define their own where they are used once)."""
