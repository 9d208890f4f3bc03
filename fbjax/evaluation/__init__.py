"""Floor 5: trained models as prediction functions (inference, the two-stage segmenter, the
anomaly model, the head step) and the evaluators that measure them."""
