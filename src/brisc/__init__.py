"""brisc: explainable brain-tumour MRI classification on BRISC 2025. Research use only, not a medical device."""

__version__ = "0.1.0"

# Contract: this order everywhere (labels, logits, sidecars, tables).
CLASSES: tuple[str, ...] = ("glioma", "meningioma", "no_tumor", "pituitary")
