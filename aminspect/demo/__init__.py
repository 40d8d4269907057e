"""The bundled demo app: a small shop whose machines stream into the inspector."""
