"""Persistent machines that store themselves in aminspect's backends and are traced like any other."""
