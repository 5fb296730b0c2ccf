"""canary: a continuously running quality canary for LLM serving."""

__version__ = "0.1.0"
