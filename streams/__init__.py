"""Stream processors (faust-streaming): tool health, breakers, safe mode, budgets, unit
economics. Reads ``agent.events``; publishes to ``agent.control`` and ``agent.metrics``."""
