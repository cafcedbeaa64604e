"""hubproxy: a Hugging Face Hub compatible proxy and private model registry."""

__version__ = "0.1.0"
