"""Dispatch reference data: the org chart, time-limit profiles and routing rules."""

DATA_PACKAGE = __name__
