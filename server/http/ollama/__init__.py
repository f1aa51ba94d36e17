"""Ollama's dialect (`/api/*`): request validation, tool calls, and the model-library views."""
