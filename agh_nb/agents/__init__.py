"""Agent definitions shipped with agh_nb: the scripted ``demo`` ACP agent and AGENT.md presets."""
