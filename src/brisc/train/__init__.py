"""Training of the three brisc models (needs the `train` extra: torch, torchvision, transformers)."""
