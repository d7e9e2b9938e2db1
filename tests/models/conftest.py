"""Fixtures shared by the tests of `models/` (tests define their own where they are used once)."""
