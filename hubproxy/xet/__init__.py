"""Xet: the content-addressed format current huggingface_hub clients upload and download through (codec,
verification and, in time, the CAS routes). The byte formats and hashes are described in ``docs/xet.md``."""
