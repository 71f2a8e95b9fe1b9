"""The package version, in a module of its own so that lower layers (the model file) can read it."""
__version__ = "0.1.0"
