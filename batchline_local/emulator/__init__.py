"""An OpenAI-compatible emulator: Files, Batches and the model endpoints on a real localhost server.

Batchline's local run and tests point the official openai SDK at it, so the code under test is the
code that talks to api.openai.com. Pace, limits and token counting come from batchline's own
settings and token counter.
"""

from .core import OpenAIEmulator
from .server import EmulatorServer, serve_forever

__all__ = ["EmulatorServer", "OpenAIEmulator", "serve_forever"]
