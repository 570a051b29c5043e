"""deepsift.generate."""
