"""The revision index, the metadata cache and the fill engine."""
