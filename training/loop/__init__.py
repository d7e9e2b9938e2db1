"""The training loop: one epoch and one evaluation, distributed set-up, resume files, --init-from,
the run log and the learning curve."""
