"""deepsift.model."""
