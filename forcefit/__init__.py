"""forcefit: equivariant force fields from few expensive labels."""
__version__ = "0.1.0"
