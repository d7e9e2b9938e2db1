"""Request intake: uploaded bytes to arrays (content types, sizes, JPEG headers, reduced decoding,
the device decode path) and the boxes form field."""
