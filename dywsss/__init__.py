"""dywsss: the VICE toolkit (performance vs. visual-explanation consistency)."""

__version__ = "0.1.0"
