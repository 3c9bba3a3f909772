"""Models: the plugin's documents, their indexes, validation and atomic writes; no behaviour."""
