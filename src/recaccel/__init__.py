"""recaccel: fast, accurate real-time recommendation models, and the serving around them."""

__version__ = "0.1.0"
