"""Intake's data files: the channel registry and the labelled appeals."""
