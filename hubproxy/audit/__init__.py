"""The audit trail: who downloaded what, written off the hot path."""
