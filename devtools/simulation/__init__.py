"""A deterministic simulation of the deployed fleet, in the spirit of FoundationDB's simulator.

Several containers of every function run at once on one virtual clock; every call to Klaviyo
(the emulator, in process) and to AWS (in memory) is a point where a seeded scheduler picks who
goes next, and where faults strike. A seed replays exactly; a failing one is shrunk and
printed with the command that replays it. ``python -m devtools.simulation`` (``make
simulate``) runs seeds; ``world`` draws what a seed plays, ``fleet`` plays the system,
``checks`` holds the invariants.
"""
