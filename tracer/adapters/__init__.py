"""Adapters that attach the tracer to state-machine libraries without editing machines."""
