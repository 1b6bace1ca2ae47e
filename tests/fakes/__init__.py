"""Stand-ins for hardware interfaces, each at the narrowest seam the real code reads through."""
