"""Read-only views of a running daemon: the dashboard's JSON, the FedMKT panel, metrics."""
