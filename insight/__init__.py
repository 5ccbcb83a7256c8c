"""deskpilot insight: event-log I/O, mining, training and the model registry."""
