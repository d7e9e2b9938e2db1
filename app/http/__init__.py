"""The HTTP surface: connections, the gate and limits, authentication, dependencies, the error
envelope, schemas, the start-up failure answer and the routes."""
