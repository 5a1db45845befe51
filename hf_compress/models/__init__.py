"""Architecture-specific knowledge (BERT, ViT)."""
