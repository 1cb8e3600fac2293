"""ServiceNow Table API and Zeebe gateway emulators, for tests, benchmarks and the demo mode."""
