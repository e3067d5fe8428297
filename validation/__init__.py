"""Validation studies and the ``gddim-numerics`` command line (installed as ``gddim_numerics.validation``).

:mod:`.study` runs samplers × diffusions × NFE on exact-score problems (:mod:`.study_problems`) as
a list of :mod:`.executor` tasks and returns plain dicts, measured by :mod:`.measures` and
analysed by :mod:`.analysis`; :mod:`.report` turns them into terminal/Markdown tables and
:mod:`.plots` into PNG plots, :mod:`.files` writes them; :mod:`.cli` is the command line
(``gddim-numerics validate``, ``bench``).
"""
