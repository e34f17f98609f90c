"""The `batchline` command line and its client for a running stack.

Everything a user of a deployed stack needs: check a file (`validate`, `estimate`), send it
(`submit`), follow and fetch it (`status`, `jobs`, `results`, `cancel`). The client talks to the
stack's S3 buckets, Step Functions state machine and DynamoDB table through boto3, whether the
stack is deployed or the one `batchline local up` runs (stack_target.py finds it).

`batchline local ...` and `--sample-emulator` use the local stack (batchline_local); they import it
inside the command, so importing this package never loads moto or the emulator.
"""
