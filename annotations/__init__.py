"""Schema doc and dataset-card template, shipped as package data (see pyproject.toml)."""
