"""Inbound auth over HTTP: one gate that every verifier plugs into, and one caller identity that logs, telemetry
and the run store use."""
