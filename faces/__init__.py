"""Faces: face sets and identity splits, the per-image result cache, face models nobody here trained, alignment."""
