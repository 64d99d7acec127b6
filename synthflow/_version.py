"""The package version, in a leaf module so library modules can read it without importing the package root
(whose lazy attributes reach the Dagster layer)."""

__version__ = "0.1.0"
