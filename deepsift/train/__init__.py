"""Training the CoDE network: the contrastive global-local objective on D3 shards (``deepsift train``)."""
