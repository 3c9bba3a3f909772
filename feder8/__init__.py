"""feder8: the sidecar that registers a site's datasets with the central resolver."""
