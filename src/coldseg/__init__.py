"""coldseg: which images to annotate before any label exists (one-shot active learning for segmentation)."""
__version__ = "0.1.0"
