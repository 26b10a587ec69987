"""The ``satchel`` command line: thin commands over the SDK client or services."""
