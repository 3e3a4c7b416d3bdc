"""One module per raw-data source; each exposes a ``prepare_*`` function returning a Dataset."""
