"""xorrelu's Hydra launcher (hydra/launcher=local, the default for --multirun); see
xorrelu_launcher.py. Hydra instantiates launchers only from the `hydra_plugins` namespace."""
