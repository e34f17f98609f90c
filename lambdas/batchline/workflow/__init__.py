"""The work behind the state machine's tasks: what happens to a job and its shards, over the adapters.

Handlers stay thin (parse the event, call one function here, answer); the rules themselves live
in batchline.domain and know nothing of AWS or OpenAI.
"""
