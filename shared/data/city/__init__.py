"""The demo city's generated area tree (see shared.geo)."""
