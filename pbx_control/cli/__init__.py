"""The ``pbx-control`` command: thin click commands over the modules that do the work."""
