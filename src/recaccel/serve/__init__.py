"""Real-time serving: the HTTP APIs (Open Inference Protocol, /v1/rank), SLO-aware batching,
worker processes, routing, elastic scaling and admission control, over runtime executors."""
