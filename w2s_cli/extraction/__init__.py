"""Embeddings from a timm backbone over a data source: batched, sharded, resumable, across torchrun ranks."""
