"""Validation studies and the ``gddim-numerics`` command line (installed as ``gddim_numerics.validation``).

:mod:`.study` runs samplers × diffusions × NFE on exact-score problems and returns plain dicts;
:mod:`.report` turns them into terminal/Markdown tables, JSON and PNG plots; :mod:`.cli` is the
command line (``gddim-numerics validate``).
"""
