"""The serving engine: the PoseService, admission, the batchers and their workers, start-up, worker
isolation, warm-up and the self-check."""
