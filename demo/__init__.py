"""``distillsync demo`` (``demo.run``) and the private MQTT broker it stages the agent and
a demo shop on (``demo.localbroker``, which the tests and the benchmark use too). Like the
command line, it imports both the agent and the relay kit; the daemon imports nothing
from here."""
