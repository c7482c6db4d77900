"""The connectors; ``destinations.registry.REGISTRY`` names them for the config."""
