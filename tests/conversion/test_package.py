"""The package's lazy API: `from conversion import convert` gives the function, cheaply."""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import subprocess
import sys

import conversion

FUNCTIONS = [name for name in conversion.__all__ if name != "ConversionError"]


def test_the_api_names_functions_even_after_every_submodule_is_imported():
    # Importing a submodule sets it as an attribute of the package; one named like a
    # function would then shadow the lazy __getattr__ that returns the function.
    for module in pkgutil.iter_modules(conversion.__path__):
        if module.name != "__main__":  # that one runs the command line
            importlib.import_module(f"conversion.{module.name}")
    namespace: dict = {}
    exec(f"from conversion import {', '.join(FUNCTIONS)}", namespace)
    for name in FUNCTIONS:
        assert inspect.isfunction(namespace[name]), f"conversion.{name} is {namespace[name]!r}"
        assert namespace[name].__name__ == name


def test_importing_the_package_loads_no_heavy_dependency():
    heavy = ("llama_cpp", "huggingface_hub", "numpy")
    code = f"import sys, conversion; print(sorted(m for m in {heavy!r} if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
