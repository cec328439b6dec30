"""``robprune sweep``: a recipe's trials on an Optuna study, each one ``robprune run``.

- :mod:`~robprune_deploy.sweep.spec`: the sweep file;
- :mod:`~robprune_deploy.sweep.storage`: where the study lives, with heartbeats;
- :mod:`~robprune_deploy.sweep.study`: joining (or creating) the study;
- :mod:`~robprune_deploy.sweep.claims`: which trial runs a setting, so each runs once;
- :mod:`~robprune_deploy.sweep.runner`: one trial as a child process (:mod:`robprune_deploy.cli.sweep_child`);
- :mod:`~robprune_deploy.sweep.mlflow_runs`: the MLflow parent and child runs;
- :mod:`~robprune_deploy.sweep.worker`: the worker's loop; :mod:`~robprune_deploy.sweep.ranking`: ``sweep.json``.

Nothing is imported here, so the CLI can name the command without importing Optuna.
"""
