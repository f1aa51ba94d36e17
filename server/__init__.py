"""laptop-llama's HTTP server: a Flask app over one llama.cpp engine, served by gunicorn."""

# llama.cpp must be loaded before numpy or sentencepiece: with a CUDA build of
# llama-cpp-python, a process that imported either of them first crashes
# (SIGSEGV) when it loads a model. Every server entry point imports this package
# first, so importing llama_cpp here fixes the order for all of them.
import llama_cpp  # noqa: F401,E402
