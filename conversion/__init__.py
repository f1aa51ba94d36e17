"""Hugging Face Llama checkpoint -> GGUF, without torch.

The plain functions are the API (the benchmark and the tests call them); the
`python -m conversion` command line in cli.py is a thin layer over them.
"""

from conversion.errors import ConversionError

__all__ = ["ConversionError", "convert", "quantize", "verify", "download"]


def __getattr__(name: str):
    # Imported lazily so that `import conversion` stays cheap and does not load
    # llama.cpp or huggingface-hub for a step that does not need them.
    if name == "convert":
        from conversion.convert import convert

        return convert
    if name == "quantize":
        from conversion.quantize import quantize

        return quantize
    if name == "verify":
        from conversion.verify import verify

        return verify
    if name == "download":
        from conversion.download import download

        return download
    raise AttributeError(name)
