"""Several hosts: gateways and workers over NATS JetStream, the registry in PostgreSQL."""
