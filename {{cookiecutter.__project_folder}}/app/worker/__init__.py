"""The task queue: TaskIQ on NATS JetStream (broker, deliveries, dead letters, scheduler)."""
