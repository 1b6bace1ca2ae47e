"""The rwkv backend: RWKV `.pth` checkpoints (v4 to v7) through the `rwkv` package."""
