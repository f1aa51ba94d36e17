"""Moderation with Llama Guard: the guard's prompt and verdict, the policy over requests and answers."""
