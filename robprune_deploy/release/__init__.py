"""Release records anyone can verify: ``release.json`` and ``MODEL_CARD.md`` beside ``gate.json``.

:mod:`~robprune_deploy.release.record` builds and writes the record,
:mod:`~robprune_deploy.release.signing` signs it (Ed25519), :mod:`~robprune_deploy.release.verify`
checks it (``robprune verify``), :mod:`~robprune_deploy.release.card` renders the model card.
"""
