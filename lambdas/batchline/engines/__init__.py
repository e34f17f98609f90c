"""Engines: the machinery that makes the domain's rules fast (tokenization, the custom_id spill, byte streams).

They implement ports the domain declares (`domain.tokens.TokenCountingPool`, `domain.planning.CustomIds`)
and are handed to it by the wiring; the domain never imports them.
"""
