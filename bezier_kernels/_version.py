"""The one version number of the distribution: the package metadata (pyproject.toml) and both packages read it."""
__version__ = "0.1.0"
