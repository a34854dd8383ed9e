"""Notebook helpers per book chapter (they read results and draw; training goes through the engine).

* :mod:`companion.chapters.style` -- the one plot style, colours per method, figure saving;
* :mod:`companion.chapters.figures` -- Background and Method figures (thesis 2.1-2.6, 3.1-3.2);
* :mod:`companion.chapters.analysis` -- Pareto fronts, sweep tables and best-compression tables;
* :mod:`companion.chapters.insights` -- dataset-level statistics of the Experiments chapter;
* :mod:`companion.chapters.corruptions` and :mod:`companion.chapters.qgen` -- the generalization study.
"""
