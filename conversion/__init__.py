"""Hugging Face checkpoint (Llama, BERT) -> GGUF, without torch.

The plain functions are the API (the benchmark and the tests call them); the
`python -m conversion` command line in cli.py is a thin layer over them.
"""

from conversion.errors import ConversionError

__all__ = ["ConversionError", "convert", "quantize", "verify", "download"]


def __getattr__(name: str) -> object:
    # Imported lazily so that `import conversion` stays cheap and does not load
    # llama.cpp or huggingface-hub for a step that does not need them. The modules are
    # named apart from their functions: importing a submodule sets it as an attribute
    # of this package, and a submodule `convert` would then hide the function `convert`
    # (this hook only runs for names the package does not have).
    if name == "convert":
        from conversion.converter import convert

        return convert
    if name == "quantize":
        from conversion.quantizer import quantize

        return quantize
    if name == "verify":
        from conversion.verifier import verify

        return verify
    if name == "download":
        from conversion.downloader import download

        return download
    raise AttributeError(name)
