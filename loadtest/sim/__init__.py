"""Discrete-event simulator of a multi-cloud deployment driving the real router and
autoscaler with simulated time, against baselines and an offline cost bound."""
