"""Image intake: uploaded bytes to arrays (content types, sizes, JPEG headers, reduced decoding,
admission, the device decode path)."""
