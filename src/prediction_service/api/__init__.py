"""The HTTP layer: thin routes over the serving, storage and registry packages."""
