"""Artifacts on disk: safetensors files with one JSON record, read lazily in row chunks, written atomically."""
