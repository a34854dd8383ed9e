"""Notebook helpers per book chapter (they read results and draw; training goes through the engine).

* :mod:`companion.chapters.style` -- the one plot style and the one way to save a
  figure;
* :mod:`companion.chapters.figures` -- Background and Method figures (thesis 2.1-2.6,
  3.1-3.2);
* :mod:`companion.chapters.analysis` -- grids, seed means, Pareto fronts,
  best-compression tables, snippets (shared by the experiment notebooks);
* :mod:`companion.chapters.stats` -- paired per-seed statistics, equivalence tests,
  Holm's correction and the verdict rules (experiments and generalization);
* :mod:`companion.chapters.paired` -- the paired checks of the configurations a
  best-compression table selects (accuracy bar with its interval, ranking, λ ties);
* :mod:`companion.chapters.thresholds`, :mod:`companion.chapters.lr_reg`,
  :mod:`companion.chapters.loss_terms`, :mod:`companion.chapters.comparison` -- the
  figures and generated Markdown of ``pareto_threshold``, ``pareto_lr_reg``,
  ``loss_terms`` and ``baselines``;
* :mod:`companion.chapters.insights` (statistics) and
  :mod:`companion.chapters.dataset_figures` (figures, snippets) -- the
  ``dataset_insights`` notebook;
* :mod:`companion.chapters.thesis` (the thesis's settings and configurations),
  :mod:`companion.chapters.claims` (its claims and their verdicts),
  :mod:`companion.chapters.scale_growth` (how fast the nested scales grow) and
  :mod:`companion.chapters.deviation_forms` (the two forms of the deviation term) -- the
  ``thesis_claims`` notebook;
* :mod:`companion.chapters.corruptions` and :mod:`companion.chapters.qgen` -- the
  generalization study.
"""
