"""Prompt templates, shipped as package data (see pyproject.toml)."""
