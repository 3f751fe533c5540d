"""``distillsync``, the one command line: it parses the arguments and dispatches to the
agent (``run``, ``check``, ``status``, ``outbox``, ``resync``), the dashboards (``tui``),
the relay kit (``consume``) and the demo. It is the only package besides ``demo`` that
imports both the agent and the relay kit; what runs is imported when it runs, so
``distillsync run`` loads neither Textual nor the relay kit."""
