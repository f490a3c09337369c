"""Prefect flow: one manual unlearning round from files. The continual flows build on the same steps."""

from __future__ import annotations

from prefect import flow

from pipelines.round.unlearn import unlearn_from_files

#: ``unlearn_from_files`` as a flow: unlearn ``forget_file`` from the model in ``model_dir``, keeping
#: ``retain_file``; writes ``output_dir`` and returns references (the folder) and the round's metrics.
unlearning_round = flow(name="unlearning-round")(unlearn_from_files)
