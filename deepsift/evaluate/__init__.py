"""deepsift.evaluate."""
