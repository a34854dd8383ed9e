"""The reproduction machinery of the lqs companion book (not part of the ``lqs`` library).

The flow, one direction only::

    lqs (library) -> companion.engine (config -> plan -> execute -> store; runner; book)
                  -> notebooks/ (papermill, one parameters cell) -> results/ -> book/

Subpackages:

* :mod:`companion.engine` -- validated run configurations, the results store, sweeps, the
  papermill runner and the book preparation;
* :mod:`companion.data` -- dataset loaders, offline sources and the availability report;
* :mod:`companion.chapters` -- the notebook helpers per chapter: plot style, background and method
  figures, Pareto and sweep analysis, dataset insights and the QGen study.

:mod:`companion.paths` is the only module that knows where data, results and the book live.
``python -m companion <notebook> --profile P`` executes one notebook (see
:mod:`companion.engine.runner`).
"""
