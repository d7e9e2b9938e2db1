"""One inference path: which boxes each image gets, crops, the forward pass, decoding and the split
per person (Predictor, PosePipeline); what drives the Predictor before serving (warm-up, INT8
calibration); how far two runs of one request are apart."""
