"""Person detection: the detections type, the detectors (torchvision and RTMDet), their inputs,
choice, export and backends."""
