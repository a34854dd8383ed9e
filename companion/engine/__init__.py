"""The experiment engine: configuration -> plan -> execute -> store, the notebook runner, the book.

* :mod:`companion.engine.config` -- the run-configuration schema, validation and hash;
* :mod:`companion.engine.store` -- the results store, one record per configuration hash;
* :mod:`companion.engine.experiment` -- train/evaluate one configuration, sweeps over many
  (plan -> execute -> store);
* :mod:`companion.engine.executors` -- where the runs of a sweep train: ``serial`` (in process)
  or ``ray`` (one task per run, local or a cluster via ``RAY_ADDRESS``);
* :mod:`companion.engine.runner` -- validates a notebook's parameters and executes it with papermill;
* :mod:`companion.engine.parameters` -- what each notebook parameter accepts (the runner's rules);
* :mod:`companion.engine.book` -- copies a profile's outputs into the book and builds it.
"""
