"""deskpilot assist: next-best actions and grounded drafts for agents."""
