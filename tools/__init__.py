"""Offline tooling: generators, evaluation and reports. The services never import it."""
