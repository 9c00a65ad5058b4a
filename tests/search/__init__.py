"""Tests of genmodels.search."""
