"""Use cases between the CLI and the world: each takes its ports as arguments and never prints."""
