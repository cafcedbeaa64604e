"""Identity: users, service accounts and their tokens."""
