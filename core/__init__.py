"""overmem core: everything that is not UI.

Never imports textual, typer or rich (tests/test_import_hygiene.py checks it), and
defers torch/transformers to the modules that train, evaluate or merge.
"""

__version__ = "0.1.0"
