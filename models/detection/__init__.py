"""Person detection: the detections type, the detectors (stand-in and RTMDet), their inputs,
choice, export and backends."""
