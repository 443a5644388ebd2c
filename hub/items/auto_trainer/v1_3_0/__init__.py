"""Hub item package (see item.yaml)."""
