"""`containai selftest`: a real session, probed from inside as a hostile agent would, and a verdict.

cases.py    the attacks (id, title, what to change when one breaks) and the probe's output parsed
runner.py   the session started as `run` starts it, probe.sh run in it as the agent, all removed
probe.sh    the probes, in one shell script run inside the agent's container
"""
