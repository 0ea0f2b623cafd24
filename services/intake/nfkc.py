"""Intake's NFKC is the shared one (``shared/nfkc.py``): dispatch's keyword rules need it too."""

from shared.nfkc import nfkc

__all__ = ["nfkc"]
