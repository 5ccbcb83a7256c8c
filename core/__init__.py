"""deskpilot core: what every package stands on and no domain owns: the error family and the sentence embedder."""
