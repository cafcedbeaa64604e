"""The Hugging Face Hub compatible HTTP surface."""
