"""An OpenAI-compatible emulator: Files, Batches and the model endpoints on a real localhost server.

Batchline's local run and tests point the official openai SDK at it, so the code under test is the
code that talks to api.openai.com. Pace, rate limits and faults come from batchline's own settings
(``settings.emulator``); tokens are counted with tiktoken directly (token_counts.py), never with
batchline's counter, so a miscount there shows up here; BATCHLINE_EMULATOR_FAULTS
overrides the faults of an emulator built from settings, and an explicit ``faults=`` (the command
line's ``--faults``) overrides both. ``billed_twice`` and ``fetch_ledger`` read the billing ledger.
"""

from .core import OpenAIEmulator
from .faults import FAULTS_ENV, Faults
from .ledger import billed_twice, fetch_ledger
from .server import EmulatorServer, serve_forever

__all__ = ["FAULTS_ENV", "EmulatorServer", "Faults", "OpenAIEmulator", "billed_twice", "fetch_ledger", "serve_forever"]
