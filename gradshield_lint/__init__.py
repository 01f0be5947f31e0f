"""gradshield-lint: flag finetuning rows whose gradient step would erode a model's safety alignment."""
__version__ = "0.1.0"
