"""Hosted repos: namespaces owned by projects, the write API of the Hub, and the source that serves them."""
