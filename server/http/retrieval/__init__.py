"""Embeddings and reranking in every dialect's shape: `/v1/embeddings`, `/api/embed`, `/embedding`, `/v1/rerank`."""
