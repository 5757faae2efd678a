"""memory-bridge: persistent caller memory for ElevenLabs phone agents, in a git-backed markdown vault."""
