"""laptop-llama's HTTP server: a Flask app over one llama.cpp engine, served by gunicorn."""
