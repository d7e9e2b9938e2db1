"""The serving engine: the PoseService, batching on the devices, start-up, device choice, worker
isolation, warm-up and the self-check."""
