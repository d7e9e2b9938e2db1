"""The HTTP surface: connections, the gate and limits, authentication, redaction, dependencies, box
fields, errors, schemas, the start-up failure answer and the routes."""
