"""Using a trained run beyond per-row predictions: text generation, image generation, embeddings."""
