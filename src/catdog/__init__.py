"""catdog: recognise cats and dogs in photos."""

__version__ = "0.1.0"
