"""Helpers that drive a real browser (headless Chromium) for the report's tests."""
