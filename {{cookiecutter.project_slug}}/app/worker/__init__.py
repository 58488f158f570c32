"""The task queue: TaskIQ on NATS JetStream (broker, dispatch after commit, scheduler)."""
