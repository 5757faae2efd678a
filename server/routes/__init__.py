"""The HTTP routes of SPEC §5, one module each: thin handlers that parse, call the service, encode."""
