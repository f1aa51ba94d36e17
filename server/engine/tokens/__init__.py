"""Text to token ids and back, read from the model's vocabulary; any thread may call these."""
