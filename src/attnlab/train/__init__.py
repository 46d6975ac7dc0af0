"""Training: one trainer for every model, metrics, checkpoints (safetensors + JSON), distributed runs."""
