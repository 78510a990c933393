"""Baseline configs (benchmark/configs), shipped as package data (see pyproject.toml)."""
