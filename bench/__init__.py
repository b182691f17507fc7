"""The benchmark: coalesced vs one-by-one under Klaviyo's real limits, cold start, memory.

Run it with ``python -m bench.run`` (``make bench``); ``bench/run.py`` lists the options.
"""
