"""xorrelu's Hydra sweeper (hydra/sweeper=search: Optuna, then the best re-run on fresh seeds);
see xorrelu_search.py. Hydra instantiates sweepers only from the `hydra_plugins` namespace."""
