"""The whole stack on this machine, with no AWS account: what `batchline local ...` runs.

moto stands in for AWS (S3, Step Functions, DynamoDB, SQS, EventBridge; moto_patches.py fills its
gaps), the functions run in-process (local_stack.py), the SQS event source feeds the worker
(event_source.py), state can outlive the process (durable_state.py), crashes can be injected
(crashes.py) and emulator/ answers as OpenAI would. samples.py makes the demo's and the tests'
request files. It depends on batchline_cli (the client the local run drives), never the reverse.
"""
