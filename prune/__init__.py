"""The paper's stages, one file each, family free. Importing the package registers the built-in
importances, budget metrics, searches and mask-tuning methods (prune/registry.py)."""
from prune import budgets, importance, methods, search  # noqa: F401
