"""OpenAI's dialect (`/v1/*`): request validation, tool calls, and the answer's wire format."""
