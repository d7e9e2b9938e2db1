"""WebSocket streams: a stream's session, its frames and its budget."""
