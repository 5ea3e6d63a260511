"""Runs that outlive the call that started them: a handle for each, the store that keeps their outcomes, and
the runs this process holds upstream requests for."""
