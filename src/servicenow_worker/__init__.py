"""Camunda 8 job worker for the ServiceNow Table API."""

__version__ = "0.1.0"
