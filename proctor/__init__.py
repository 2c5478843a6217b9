"""proctor: evaluate untrusted ML submissions safely."""

__version__ = "0.1.0"
