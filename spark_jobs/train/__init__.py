"""Distributed training: dataset manifest -> multi-worker Keras CNN -> versioned SavedModel."""
