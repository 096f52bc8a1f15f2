"""fashionnet sweep: hyperparameter search with Optuna (TPE, pruning from each epoch's
validation figure, the study in its storage), on local processes or a Dask cluster. Every trial
is a full run folder. The `sweep` extra (optuna) and the `dask` extra (dask.distributed) are
imported only here."""
