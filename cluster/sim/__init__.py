"""Discrete-event simulation of a lorafleet fleet, running the real router and planner."""
