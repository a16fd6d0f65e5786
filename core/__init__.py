"""overmem core: everything that is not UI.

The repository's ``core/`` folder is installed as this package, ``overmem`` (so
``core/rundir/reader.py`` is ``overmem.rundir.reader``); the README's "Code layout"
maps its subpackages. It never imports textual, typer or rich
(tests/test_import_hygiene.py checks it), and defers torch/transformers to the
modules that train, evaluate or merge.
"""

__version__ = "0.1.0"
