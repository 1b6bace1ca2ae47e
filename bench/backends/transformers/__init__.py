"""The transformers backend: any causal LM Hugging Face transformers loads, in process."""
