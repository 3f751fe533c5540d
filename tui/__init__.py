"""The Textual dashboards: one agent through its status API, or a fleet through the relay.

Only this package imports Textual; it reaches the agent only through ``agent.apiclient``.
"""
