"""The shared server kit: configuration, auth, errors, server bootstrap, clients, storage."""
