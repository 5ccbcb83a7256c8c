"""deskpilot routing: ticket triage decisions and feedback."""
