"""Migration scripts, one per schema version; an old one is never edited.

This package must never import anything from itsd.
"""
